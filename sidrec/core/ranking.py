"""What every recommender's evaluation shares: the query rows, the target's rank, and the
``results.json`` + ``predictions.parquet`` pair that ``sidrec analyze`` and ``sidrec compare``
read."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from sidrec.core.dataset import Dataset
from sidrec.core.io import PREDICTIONS_FILE, RESULTS_FILE, write_json
from sidrec.core.ledger import METRIC_COLUMNS, append_experiment, describe
from sidrec.core.manifest import git_commit, peak_memory
from sidrec.core.metrics import cutoffs, hr_ndcg, target_ranks
from sidrec.core.references import reference_metrics
from sidrec.core.training import swanlab_run


class BestEpoch:
    """The trained baselines' epoch selection: keeps the model's state at its best validation
    score and says when ``patience`` epochs (0 = never) have passed without a better one."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best, self.waited = patience, float("-inf"), 0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, model: torch.nn.Module, score: float) -> bool:
        """Record an epoch's score; True when training should stop."""
        if score > self.best:
            self.best, self.waited = score, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.waited += 1
        return 0 < self.patience <= self.waited


def fit_epochs(
    model: torch.nn.Module,
    cfg: dict[str, Any],
    stage: str,
    patience: int,
    epochs: Iterable[int],
    train_epoch: Callable[[], float],
    validate: Callable[[], dict[str, float]],
    select: str,
) -> tuple[list[dict[str, Any]], float]:
    """Train a baseline epoch by epoch over ``epochs`` (e.g. a progress bar over 1..E):
    ``train_epoch`` returns the epoch's mean loss, ``validate`` its validation figures. The
    weights of the epoch with the best ``select`` figure are loaded back into ``model``;
    training stops after ``patience`` epochs without a better one (0 = never); SwanLab
    (``stage``'s run) sees every epoch. Returns the per-epoch log and the training seconds."""
    best, log = BestEpoch(patience), []
    dashboard = swanlab_run(cfg, stage)
    started = time.perf_counter()
    for epoch in epochs:
        loss = train_epoch()
        found = validate()
        log.append({"epoch": epoch, "train_loss": loss, **found})
        if dashboard is not None:
            valid = {f"valid/{k.lower()}": v for k, v in found.items()}
            dashboard.log({"train/loss": loss, **valid}, step=epoch)
        if hasattr(epochs, "set_postfix"):
            epochs.set_postfix(loss=f"{loss:.3f}", **{select.lower(): f"{found[select]:.4f}"})
        if best.update(model, found[select]):
            break
    seconds = time.perf_counter() - started
    if dashboard is not None:
        dashboard.finish()
    model.load_state_dict(best.state)
    return log, seconds


def baseline_info(
    method: str,
    e: dict[str, Any],
    k: int,
    log: list[dict[str, Any]],
    model: torch.nn.Module,
    train_seconds: float,
    seconds: float,
    ds: Dataset,
    rows: pl.DataFrame,
    select: str = "NDCG@10",
) -> dict[str, Any]:
    """What a trained baseline's ``results.json`` records besides its metrics (``e`` = the
    ``evaluate`` section, ``k`` items ranked per row, ``log`` one entry per epoch with the
    validation score ``select`` its epoch was chosen by)."""
    exclude = e["exclude_history"]
    return {
        "method": method,
        "split": e["split"],
        "top_k": k,
        "max_users": e["max_users"],
        "exclude_history": exclude,
        "best_epoch": max(log, key=lambda r: r[select])["epoch"],
        "epochs_run": len(log),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(train_seconds, 3),
        "seconds": round(seconds, 3),
        "users_per_second": round(rows.height / seconds, 2),
        **peak_memory(),
        "device": device_name(),
        "baselines": reference_metrics(ds, rows, k, exclude),
    }


def list_shares(items: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each item's share of its row's list: a softmax over the row's scores (N, K), 0 where the
    list ran out (item -1) and in a row with no item.

    Example:
        >>> list_shares(np.array([[3, 4, -1]]), np.log(np.array([[3.0, 1.0, 5.0]]))).tolist()
        [[0.75, 0.25, 0.0]]
    """
    scores = np.where(items >= 0, scores, -np.inf)
    top = scores.max(axis=1, keepdims=True)
    weights = np.exp(scores - np.where(np.isfinite(top), top, 0.0))
    total = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()})"


def write_ranking(
    out: Path,
    rows: pl.DataFrame,
    items: np.ndarray,
    scores: np.ndarray,
    info: dict[str, Any],
    sids: list[list[str]] | None = None,
    target_sids: list[str] | None = None,
    unfiltered: np.ndarray | None = None,
    unfiltered_sids: list[list[str]] | None = None,
    ks: list[int] | None = None,
) -> dict[str, Any]:
    """Score a ranking and write ``predictions.parquet`` and ``results.json`` into ``out``.

    Args:
        rows: the query rows (user_id, history, target), N of them.
        items: (N, K) ranked item ids, best first.
        scores: (N, K) their scores.
        info: method, settings and timing, copied into the results.
        sids: per row, the ranked SIDs (generative models): then ``metrics`` use the papers'
            rule (a predicted SID matches when it equals the target's SID) and
            ``metrics_strict`` credit a shared SID to one item only (the ranked item).
        target_sids: per row, the target's SID (with ``sids``).
        unfiltered: (N, K) the ranking before the history's items were left out (with
            ``evaluate.exclude_history``; ``unfiltered_sids`` their SIDs for generative
            models): scored as ``metrics_with_history``.
        ks: the cutoffs to score (default: the standard ones up to K).

    Returns:
        The results dictionary.
    """
    targets = rows["target"].to_numpy()
    ks = ks or cutoffs(items.shape[1])

    def sid_ranks(ranked_sids: list[list[str]]) -> np.ndarray:
        assert target_sids is not None
        width = max(len(s) for s in target_sids + [x for r in ranked_sids for x in r]) or 1
        ranked = np.array(ranked_sids, dtype=f"<U{width}")
        return target_ranks(ranked, np.array(target_sids, dtype=f"<U{width}"))

    strict = target_ranks(items, targets)
    cols: dict[str, Any] = {
        "user_id": rows["user_id"],
        "history": rows["history"],
        "target": rows["target"],
        "ranked_items": items.tolist(),
        "scores": scores.astype(np.float32).tolist(),
    }
    results: dict[str, Any] = {**info, "users": rows.height, "ks": ks}
    if sids is None:
        rank = strict
        results["match_rule"] = "item"
    else:
        rank = sid_ranks(sids)
        cols |= {"target_sid": target_sids, "ranked_sids": sids, "rank_strict": strict}
        results["match_rule"] = "sid (a predicted SID matches when it equals the target's SID)"
    cols["rank"] = rank
    results["metrics"] = hr_ndcg(rank, ks)
    if sids is not None:
        results["metrics_strict"] = hr_ndcg(strict, ks)
    if unfiltered is not None:
        before = target_ranks(unfiltered, targets) if unfiltered_sids is None else None
        results["metrics_with_history"] = hr_ndcg(
            before if before is not None else sid_ranks(unfiltered_sids), ks
        )
    # ranks are 1-based; null where the target is not among the K predictions
    frame = pl.DataFrame(cols).with_columns(
        pl.when(pl.col(c) > 0).then(pl.col(c)).cast(pl.Int32).alias(c)
        for c in ("rank", "rank_strict")
        if c in cols
    )
    frame.write_parquet(out / PREDICTIONS_FILE)
    write_json(out / RESULTS_FILE, results)
    return results


def record_experiment(
    cfg: dict[str, Any], out: Path, results: dict[str, Any], model: str, data: Path, sid: str
) -> Path:
    """Add a finished evaluation in ``out`` to the experiment ledger; returns its path.

    Args:
        model: what was evaluated (e.g. ``sft:tiny-qwen2``, ``sasrec``).
        data: the dataset directory.
        sid: the SID method (the SID directory's stage), empty for non-SID models.
    """
    return append_experiment(
        cfg,
        {
            "run_name": cfg["run_name"],
            "method": results["method"],
            "model": model,
            "dataset": describe(data, "source", "dataset"),
            "sid_method": sid,
            "split": results["split"],
            "users": results["users"],
            "commit": git_commit() or "",
            "output": str(out),
            **{k: v for k, v in results["metrics"].items() if k in METRIC_COLUMNS},
        },
    )
