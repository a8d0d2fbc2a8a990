"""``sidrec baseline two-tower``: DSSM-style retrieval, the item vectors in a faiss index.

- **Item tower**: an id embedding plus a projection (MLP) of the item's text embedding (the rq
  stage's ``embeddings.npy``), L2-normalised: an item never seen in training still has a
  vector from its text.
- **User tower**: an MLP over the mean of the history's item vectors (its own id table plus the
  shared text projection) and the last item's, L2-normalised.
- **Training**: softmax over the batch's targets plus ``two_tower.num_negatives`` sampled items
  (``uniform`` or ``popularity``-weighted), every logit corrected by the log of the chance that
  the item is a candidate (log Q: training frequency for the batch's targets, the sampling
  chance for sampled ones), the row's own target masked where it recurs; the epoch kept by
  validation NDCG@10 (exact search).
- **Retrieval**: the item vectors in a faiss index (``flat``: exact inner product, ``ivf``:
  IVFFlat with ``nlist`` / ``nprobe``, ``hnsw``: HNSWFlat with ``hnsw_m`` / ``hnsw_ef_search``),
  the top ``top_k`` (up to 200) per user, HR@K / NDCG@K up to 200 (``metrics``; exact search's
  as ``metrics_exact``), and the index's recall of the exact top K. The index is saved with
  the model and reloadable (:func:`load_index`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sidrec.core.dataset import Dataset, read_dataset
from sidrec.core.embeddings import load_embeddings
from sidrec.core.errors import InputError, SidrecError, require_file
from sidrec.core.io import atomic_dir, check_output, write_json
from sidrec.core.manifest import Run
from sidrec.core.metrics import cutoffs, drop_history, hr_ndcg, target_ranks
from sidrec.core.ranking import baseline_info, fit_epochs, record_experiment, write_ranking
from sidrec.core.sasrec_model import pad_left
from sidrec.core.sequences import query_rows, training_frequency

MODEL_FILE = "model.pt"
VECTORS_FILE = "item_vectors.npy"
INDEX_FILE = "items.faiss"
INDEXES = ("flat", "ivf", "hnsw")
MAX_K = 200
VALID_K = 10


class TwoTower(nn.Module):
    """Item and user towers over ``text`` (N, D): item ``i`` is token ``i + 1``, 0 pads."""

    def __init__(self, text: torch.Tensor, dim: int, hidden: int) -> None:
        super().__init__()
        n, d = text.shape
        self.register_buffer("text", torch.cat([text.new_zeros(1, d), text]))
        self.project = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.item_id = nn.Embedding(n + 1, dim, padding_idx=0)
        self.history_id = nn.Embedding(n + 1, dim, padding_idx=0)
        self.user = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        for table in (self.item_id, self.history_id):
            nn.init.normal_(table.weight, std=0.02)
            nn.init.zeros_(table.weight[0])

    def items(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unit item vectors (..., dim) of item tokens (...)."""
        return nn.functional.normalize(
            self.item_id(tokens) + self.project(self.text[tokens]), dim=-1
        )

    def users(self, seq: torch.Tensor) -> torch.Tensor:
        """Unit user vectors (B, dim) of left-padded history tokens ``seq`` (B, L)."""
        vec = self.history_id(seq) + self.project(self.text[seq])  # (B, L, dim)
        keep = (seq > 0).unsqueeze(-1).float()
        mean = (vec * keep).sum(1) / keep.sum(1).clamp(min=1)
        return nn.functional.normalize(self.user(torch.cat([mean, vec[:, -1]], -1)), dim=-1)


def _loss(
    model: TwoTower,
    seq: torch.Tensor,
    target: torch.Tensor,
    log_freq: torch.Tensor,
    sampler: torch.Tensor,
    n_neg: int,
    temperature: float,
) -> torch.Tensor:
    """In-batch + sampled softmax with log Q correction for histories ``seq`` (B, L) and
    targets (B,) (items, 0-based); ``log_freq`` (N,) and ``sampler`` (N,) probabilities."""
    users = model.users(seq)
    negatives = torch.multinomial(sampler, n_neg, replacement=True) if n_neg else target[:0]
    candidates = torch.cat([target, negatives])  # (B + S,)
    logits = users @ model.items(candidates + 1).T / temperature
    log_q = torch.cat([log_freq[target], sampler[negatives].log()])
    logits = logits - log_q
    # the row's own target wherever else it appears among the candidates is not a negative
    again = candidates[None, :] == target[:, None]
    again[torch.arange(len(target)), torch.arange(len(target))] = False
    logits = logits.masked_fill(again, float("-inf"))
    return nn.functional.cross_entropy(logits, torch.arange(len(target), device=seq.device))


@torch.no_grad()
def vectors(model: TwoTower, n_items: int) -> np.ndarray:
    """(n_items, dim) float32 item vectors."""
    model.eval()
    tokens = torch.arange(1, n_items + 1, device=model.text.device)
    return model.items(tokens).float().cpu().numpy()


@torch.no_grad()
def user_vectors(model: TwoTower, histories: list[list[int]], max_len: int) -> np.ndarray:
    """(N, dim) float32 user vectors of item-id histories."""
    model.eval()
    dev = model.text.device
    out = []
    for b in range(0, len(histories), 1024):
        part = [[i + 1 for i in h[-max_len:]] for h in histories[b : b + 1024]]
        out.append(model.users(pad_left(part, max_len).to(dev)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.item_id.embedding_dim), np.float32)


def build_index(vecs: np.ndarray, t: dict[str, Any], seed: int) -> faiss.Index:
    """A faiss inner-product index of ``vecs`` (N, d) as ``t`` (the ``two_tower`` section)
    says."""
    n, d = vecs.shape
    kind = t["index"]
    if kind not in INDEXES:
        raise SidrecError(f"two_tower.index must be one of {INDEXES}, got {kind!r}")
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        if not 1 <= t["nlist"] <= n or t["nprobe"] < 1:
            raise SidrecError(
                f"two_tower.nlist must be in 1..{n} (the items) and two_tower.nprobe >= 1, got "
                f"{t['nlist']} and {t['nprobe']}"
            )
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, t["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(vecs)
        index.nprobe = t["nprobe"]
    else:
        index = faiss.IndexHNSWFlat(d, t["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = t["hnsw_ef_search"]
    index.add(vecs)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item ids (N, k) and inner products (N, k) of each query (N, d); -1 / -inf
    where the index found fewer."""
    scores, items = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return items.astype(np.int64), np.where(items >= 0, scores, -np.inf)


def ann_recall(ann: np.ndarray, exact: np.ndarray, ks: list[int]) -> dict[str, float]:
    """Mean share of the exact top K (N, >=K) that the approximate top K (N, >=K) found."""
    return {
        f"recall@{k}": float(
            np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(ann, exact, strict=True)])
        )
        for k in ks
    }


def load_index(path: str | Path, n_items: int, dim: int) -> faiss.Index:
    """The saved index of a two-tower output, checked against ``n_items`` items of ``dim``."""
    file = require_file(Path(path) / INDEX_FILE, "faiss index (a two-tower output?)")
    index = faiss.read_index(str(file))
    if index.d != dim or index.ntotal != n_items:
        raise InputError(
            file,
            f"holds {index.ntotal} vectors of dimension {index.d}; expected {n_items} items of "
            f"dimension {dim}",
        )
    return index


def _rank(
    index: faiss.Index, users: np.ndarray, histories: list[list[int]], k: int, exclude: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) items and scores, without each history's items when ``exclude``."""
    longest = max(map(len, histories), default=0) if exclude else 0
    items, scores = search(index, users, min(k + longest, index.ntotal))
    if exclude:
        return drop_history(items, scores, histories, k)
    return items[:, :k], scores[:, :k]


def _check(t: dict[str, Any]) -> None:
    """Refuse ``two_tower`` settings that cannot train."""
    positive = ("dim", "hidden", "max_len", "epochs", "batch_size", "top_k")
    bad = [f"two_tower.{k}={t[k]}" for k in positive if t[k] < 1]
    if bad or not 0 < t["temperature"] or t["num_negatives"] < 0 or t["top_k"] > MAX_K:
        raise SidrecError(
            f"{', '.join(bad) or 'two_tower settings'}: dim, hidden, max_len, epochs, "
            f"batch_size and top_k (at most {MAX_K}) must be >= 1, temperature > 0, "
            "num_negatives >= 0"
        )
    if t["negatives"] not in ("uniform", "popularity"):
        raise SidrecError(
            f"two_tower.negatives must be uniform or popularity, got {t['negatives']!r}"
        )


def _train_epoch(
    model: TwoTower,
    opt: torch.optim.Optimizer,
    train: tuple[list[list[int]], np.ndarray],
    order: np.ndarray,
    freq: np.ndarray,
    t: dict[str, Any],
) -> float:
    """One pass over the training rows (``train`` = histories and targets) in ``order``;
    ``freq`` (float64 [n_items]) the smoothed training frequencies. Returns the mean loss."""
    dev = next(model.parameters()).device
    n = len(freq)
    log_freq = torch.from_numpy(np.log(freq / freq.sum())).float().to(dev)
    sampler = torch.from_numpy(
        freq / freq.sum() if t["negatives"] == "popularity" else np.full(n, 1 / n)
    )
    sampler = sampler.float().to(dev)
    histories, targets = train
    model.train()
    total = 0.0
    for b in range(0, len(order), t["batch_size"]):
        rows = order[b : b + t["batch_size"]]
        seq = pad_left([[i + 1 for i in histories[r][-t["max_len"] :]] for r in rows], t["max_len"])
        target = torch.from_numpy(targets[rows]).to(dev)
        loss = _loss(
            model, seq.to(dev), target, log_freq, sampler, t["num_negatives"], t["temperature"]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(rows)
    return total / len(targets)


def _fit(model: TwoTower, ds: Dataset, cfg: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    """Train until validation NDCG@10 stops improving (``two_tower.patience``) and keep the
    best epoch's weights; returns the per-epoch log and the training seconds."""
    t = cfg["two_tower"]
    rng = np.random.default_rng(cfg["seed"])
    opt = torch.optim.AdamW(
        model.parameters(), lr=t["learning_rate"], weight_decay=t["weight_decay"]
    )
    freq = training_frequency(ds).astype(np.float64) + 1.0
    train = (ds.train["history"].to_list(), ds.train["target"].to_numpy())
    valid = query_rows(ds, "valid", t["max_valid_users"], cfg["seed"])
    exclude = cfg["evaluate"]["exclude_history"]

    def validate() -> dict[str, float]:
        flat = build_index(vectors(model, len(freq)), {**t, "index": "flat"}, cfg["seed"])
        users = user_vectors(model, valid["history"].to_list(), t["max_len"])
        items, _ = _rank(flat, users, valid["history"].to_list(), VALID_K, exclude)
        return hr_ndcg(target_ranks(items, valid["target"].to_numpy()), [VALID_K])

    return fit_epochs(
        model,
        cfg,
        "two_tower",
        t["patience"],
        tqdm(range(1, t["epochs"] + 1), desc="two-tower"),
        lambda: _train_epoch(model, opt, train, rng.permutation(len(train[1])), freq, t),
        validate,
        f"NDCG@{VALID_K}",
    )


def train_two_tower(
    data: str | Path, emb: str | Path, out: str | Path, cfg: dict[str, Any], overwrite: bool = False
) -> dict[str, Any]:
    """Train the two towers on ``data``'s training rows with ``emb``'s text embeddings, index the
    item vectors, retrieve for ``cfg["evaluate"]["split"]`` and write the model, the vectors,
    the index, ``train_log.json``, ``results.json`` and ``predictions.parquet`` into ``out``."""
    t = cfg["two_tower"]
    _check(t)
    out = Path(out)
    check_output(out, overwrite)
    ds, _ = read_dataset(data)
    text = load_embeddings(emb)
    n = ds.items.height
    if text.shape[0] != n:
        raise InputError(Path(emb), f"has {text.shape[0]} rows for the dataset's {n} items")
    run = Run("baseline.two_tower", cfg, {"data": str(data), "emb": str(emb)}, cfg["seed"])
    torch.manual_seed(cfg["seed"])
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = TwoTower(torch.from_numpy(text), t["dim"], t["hidden"]).to(dev)
    log, train_seconds = _fit(model, ds, cfg)
    item_vecs = vectors(model, n)
    index = build_index(item_vecs, t, cfg["seed"])
    e = cfg["evaluate"]
    exclude = e["exclude_history"]
    rows = query_rows(ds, e["split"], e["max_users"], cfg["seed"])
    started = time.perf_counter()
    hist = rows["history"].to_list()
    users = user_vectors(model, hist, t["max_len"])
    k = min(t["top_k"], n)
    items, scores = _rank(index, users, hist, k, exclude)
    seconds = time.perf_counter() - started
    exact, _ = _rank(
        build_index(item_vecs, {**t, "index": "flat"}, cfg["seed"]), users, hist, k, exclude
    )
    ks = [*cutoffs(k), *(x for x in (100, MAX_K) if x <= k)]
    info = {
        **baseline_info("two_tower", e, k, log, model, train_seconds, seconds, ds, rows),
        "index": {
            name: t[name] for name in ("index", "nlist", "nprobe", "hnsw_m", "hnsw_ef_search")
        },
        "index_recall_of_exact": ann_recall(items, exact, [x for x in (10, 50, MAX_K) if x <= k]),
        # what exact search over the same vectors scores (``metrics``: the index's top K)
        "metrics_exact": hr_ndcg(target_ranks(exact, rows["target"].to_numpy()), ks),
    }
    with atomic_dir(out, overwrite) as tmp:
        torch.save(model.state_dict(), tmp / MODEL_FILE)
        np.save(tmp / VECTORS_FILE, item_vecs)
        faiss.write_index(index, str(tmp / INDEX_FILE))
        write_json(tmp / "train_log.json", log)
        results = write_ranking(tmp, rows, items, scores, info, ks=ks)
        run.finish(tmp, {"users": rows.height, "train_rows": ds.train.height}, results=results)
    record_experiment(cfg, out, results, "two_tower", Path(data), "")
    return results
