"""``sidrec baseline sasrec``: SASRec (Kang & McAuley, 2018), the traditional reference.

A causal transformer over item ids, trained with full-softmax cross-entropy on each user's
training sequence (the loss on every item after the first: the same examples as every prefix
of the training split), the epoch kept by validation NDCG@10, and evaluated with the same rows,
metrics and files as ``sidrec evaluate``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sidrec.core.dataset import read_dataset
from sidrec.core.errors import SidrecError
from sidrec.core.io import atomic_dir, check_output, write_json
from sidrec.core.manifest import Run
from sidrec.core.metrics import hr_ndcg, target_ranks
from sidrec.core.ranking import baseline_info, fit_epochs, record_experiment, write_ranking
from sidrec.core.sasrec_model import (
    MODEL_FILE,
    SASRec,
    item_windows,
    pad_left,
    window_batches,
)
from sidrec.core.sequences import query_rows, user_sequences

VALID_K = 10


def train_epoch(
    model: SASRec,
    opt: torch.optim.Optimizer,
    windows: list[tuple[list[int], list[int]]],
    batch_size: int,
    rng: np.random.Generator,
    aux_weight: float = 0.0,
) -> float:
    """One pass over ``windows`` (from :func:`item_windows`), minimising cross-entropy plus
    ``aux_weight`` x the experts' load-balancing loss; returns the mean cross-entropy per
    target."""
    model.train()
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    for seq, target in window_batches(windows, batch_size, rng, dev):
        keep = target >= 0
        loss = nn.functional.cross_entropy(model.scores(model(seq)[keep]), target[keep])
        opt.zero_grad()
        (loss + aux_weight * model.aux_loss).backward()
        opt.step()
        total += float(loss.detach()) * int(keep.sum())
        count += int(keep.sum())
    return total / max(count, 1)


@torch.no_grad()
def rank_items(
    model: SASRec,
    histories: list[list[int]],
    k: int,
    max_len: int,
    batch: int,
    exclude_history: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items (N, k) and scores (N, k) after each history, full ranking (without the
    history's own items when ``exclude_history``)."""
    model.eval()
    dev = next(model.parameters()).device
    items, scores = [], []
    for b in range(0, len(histories), batch):
        hists = histories[b : b + batch]
        part = [[i + 1 for i in h[-max_len:]] for h in hists]
        hidden = model(pad_left(part, max_len).to(dev))[:, -1]
        all_scores = model.scores(hidden)
        if exclude_history:
            rows = [r for r, h in enumerate(hists) for _ in h]
            cols = [i for h in hists for i in h]
            all_scores[rows, cols] = float("-inf")
        top = all_scores.topk(k, dim=1)
        items.append(top.indices.cpu().numpy())
        scores.append(top.values.float().cpu().numpy())
    return np.concatenate(items), np.concatenate(scores)


def train_sasrec(
    data: str | Path, out: str | Path, cfg: dict[str, Any], overwrite: bool = False
) -> dict[str, Any]:
    """Train SASRec on ``data``'s training sequences, keep the epoch with the best validation
    NDCG@10, evaluate it on ``cfg["evaluate"]["split"]`` and write the model, ``train_log.json``,
    ``results.json`` and ``predictions.parquet`` into ``out``. Returns the results."""
    s = cfg["sasrec"]
    positive = ("hidden", "layers", "heads", "max_len", "epochs", "batch_size")
    bad = [f"sasrec.{k}={s[k]}" for k in (*positive, "eval_batch_size", "top_k") if s[k] < 1]
    if bad:
        raise SidrecError(f"{', '.join(bad)}: must be >= 1")
    out = Path(out)
    check_output(out, overwrite)
    ds, _ = read_dataset(data)
    run = Run("baseline.sasrec", cfg, {"data": str(data)}, cfg["seed"])
    torch.manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n_items = ds.items.height
    model = SASRec.from_config(n_items, s).to(dev)
    opt = torch.optim.AdamW(
        model.parameters(), lr=s["learning_rate"], weight_decay=s["weight_decay"]
    )
    windows = item_windows(user_sequences(ds), s["max_len"])
    valid = query_rows(ds, "valid", s["max_valid_users"], cfg["seed"])
    valid_hist = valid["history"].to_list()
    valid_target = valid["target"].to_numpy()
    exclude = cfg["evaluate"]["exclude_history"]

    def validate() -> dict[str, float]:
        items, _ = rank_items(
            model, valid_hist, VALID_K, s["max_len"], s["eval_batch_size"], exclude
        )
        return hr_ndcg(target_ranks(items, valid_target), [VALID_K])

    log, train_seconds = fit_epochs(
        model,
        cfg,
        "sasrec",
        s["patience"],
        tqdm(range(1, s["epochs"] + 1), desc="sasrec"),
        lambda: train_epoch(model, opt, windows, s["batch_size"], rng, s["moe_aux_weight"]),
        validate,
        f"NDCG@{VALID_K}",
    )
    e = cfg["evaluate"]
    rows = query_rows(ds, e["split"], e["max_users"], cfg["seed"])
    started = time.perf_counter()
    histories = rows["history"].to_list()
    items, scores = rank_items(
        model, histories, s["top_k"], s["max_len"], s["eval_batch_size"], exclude
    )
    unfiltered = None
    if exclude:
        unfiltered, _ = rank_items(model, histories, s["top_k"], s["max_len"], s["eval_batch_size"])
    seconds = time.perf_counter() - started
    info = baseline_info("sasrec", e, s["top_k"], log, model, train_seconds, seconds, ds, rows)
    with atomic_dir(out, overwrite) as tmp:
        torch.save(model.state_dict(), tmp / MODEL_FILE)
        write_json(tmp / "train_log.json", log)
        results = write_ranking(tmp, rows, items, scores, info, unfiltered=unfiltered)
        run.finish(tmp, {"users": rows.height, "train_windows": len(windows)}, results=results)
    record_experiment(cfg, out, results, block_name(s), Path(data), "")
    return results


# the block settings that make a variant, at their plain SASRec values
PLAIN_BLOCK = {"norm": "layer", "position": "learned", "mlp": "plain", "moe_experts": 0}


def block_name(s: dict[str, Any]) -> str:
    """How the ledger names a SASRec with the ``sasrec`` settings ``s``.

    Example:
        >>> block_name({"norm": "rms", "position": "learned", "mlp": "plain", "moe_experts": 4})
        'sasrec:norm=rms,moe_experts=4'
    """
    changed = [f"{k}={s[k]}" for k, plain in PLAIN_BLOCK.items() if s[k] != plain]
    return ":".join(["sasrec", ",".join(changed)]) if changed else "sasrec"
