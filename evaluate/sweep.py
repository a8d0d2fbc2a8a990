"""``sidrec sweep`` and ``sidrec export-submission``: from an evaluation's ranked lists to the
items a user is actually shown, chosen by a top-K cut and a score threshold.

Scores are normalised per user: a softmax over the user's ranked list (for a generative model,
whose scores are SID log-probabilities, each item's share of the list's probability), except a
ranker's (``sidrec rank``), whose scores are already probabilities and are used as they are. For a
(K, threshold) pair a user is shown the items of their top K whose normalised score is at least
the threshold. Over all query rows (micro-averaged): precision = hits / items shown, recall =
hits / targets (one per row), F1 = their harmonic mean.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sidrec.core.errors import InputError, SidrecError, require_file
from sidrec.core.io import PREDICTIONS_FILE, RESULTS_FILE, read_json
from sidrec.core.ranking import list_shares

SWEEP_COLUMNS = (
    "topk",
    "threshold",
    "precision",
    "recall",
    "f1",
    "shown_per_user",
    "users_shown_none",
)


def read_predictions(eval_dir: str | Path) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """An evaluation's rows and their ranked items (N, K) and normalised scores (N, K): a
    softmax over each row's list, or a ranker's probabilities as they are (0 where the list
    ran out: item -1)."""
    path = require_file(Path(eval_dir) / PREDICTIONS_FILE, "predictions (an evaluation dir?)")
    info = Path(eval_dir) / RESULTS_FILE
    results = read_json(info) if info.is_file() else {}
    df = pl.read_parquet(path)
    missing = [c for c in ("user_id", "target", "ranked_items", "scores") if c not in df.columns]
    if missing:
        raise InputError(
            path, f"expected columns user_id, target, ranked_items, scores; no {missing}"
        )
    items = np.array(df["ranked_items"].to_list(), dtype=np.int64)
    scores = np.array(df["scores"].to_list(), dtype=np.float64)
    if items.ndim != 2 or items.shape != scores.shape:
        raise InputError(path, "expected ranked_items and scores lists of one length per row")
    if results.get("score_kind") == "probability":
        return df, items, np.where(items >= 0, scores, 0.0)
    return df, items, list_shares(items, scores)


def _check(topks: Sequence[int], thresholds: Sequence[float], width: int) -> None:
    bad_k = [k for k in topks if not 1 <= k <= width]
    if bad_k:
        raise SidrecError(
            f"--topk-list values must be in 1..{width} (the evaluation ranked {width} items per "
            f"user); got {bad_k}"
        )
    bad_t = [t for t in thresholds if not 0.0 <= t <= 1.0]
    if bad_t:
        raise SidrecError(f"--threshold-list values are normalised scores, in [0, 1]; got {bad_t}")
    if not topks or not thresholds:
        raise SidrecError("give at least one value in --topk-list and in --threshold-list")


def _shown(items: np.ndarray, probs: np.ndarray, topk: int, threshold: float) -> np.ndarray:
    """(N, topk) whether each of the first ``topk`` items is shown."""
    return (probs[:, :topk] >= threshold) & (items[:, :topk] >= 0)


def sweep(
    eval_dir: str | Path, topks: Sequence[int], thresholds: Sequence[float]
) -> list[dict[str, Any]]:
    """Precision, recall and F1 for every (K, threshold) pair (:data:`SWEEP_COLUMNS`).

    Example: two rows, targets 5 and 9; row 0 ranks [5, 6] with probabilities [0.7, 0.3], row
    1 ranks [7, 9] with [0.6, 0.4]. At K = 2, threshold 0.35: shown {5}, {7, 9}, so 2 hits
    of 3 shown: precision 2/3, recall 2/2, F1 0.8.
    """
    df, items, probs = read_predictions(eval_dir)
    _check(topks, thresholds, items.shape[1])
    targets = df["target"].to_numpy()[:, None]
    out = []
    for k in topks:
        for t in thresholds:
            shown = _shown(items, probs, k, t)
            hits = int((shown & (items[:, :k] == targets)).sum())
            n_shown = int(shown.sum())
            precision = hits / n_shown if n_shown else 0.0
            recall = hits / len(df)
            f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
            out.append(
                {
                    "topk": k,
                    "threshold": t,
                    "precision": precision,
                    "recall": recall,
                    "f1": f1,
                    "shown_per_user": n_shown / len(df),
                    "users_shown_none": int((~shown.any(axis=1)).sum()),
                }
            )
    return out


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """The sweep as CSV, via a temporary file and a rename."""
    text = io.StringIO()
    writer = csv.DictWriter(text, SWEEP_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text.getvalue())
    tmp.replace(path)


def format_sweep(rows: list[dict[str, Any]]) -> str:
    """The sweep as a table, the best F1 marked."""
    best = max(range(len(rows)), key=lambda i: rows[i]["f1"])
    lines = [
        f"{'top-K':>6} {'threshold':>10} {'precision':>10} {'recall':>8} {'F1':>8} {'shown':>7}"
    ]
    for i, r in enumerate(rows):
        lines.append(
            f"{r['topk']:>6} {r['threshold']:>10g} {r['precision']:>10.4f} {r['recall']:>8.4f} "
            f"{r['f1']:>8.4f} {r['shown_per_user']:>7.2f}{'  <- best F1' if i == best else ''}"
        )
    return "\n".join(lines)


def export_submission(
    eval_dir: str | Path, threshold: float, topk: int, max_entries: int, out: str | Path
) -> dict[str, int]:
    """Write ``user_id<TAB>item_id`` lines (no header) of the items shown at (``topk``,
    ``threshold``): each user's pairs once, best first, at most ``max_entries`` per user (over
    all the user's rows). Returns counts."""
    df, items, probs = read_predictions(eval_dir)
    _check([topk], [threshold], items.shape[1])
    if max_entries < 1:
        raise SidrecError(f"--max-entries-per-user must be >= 1, got {max_entries}")
    shown = _shown(items, probs, topk, threshold)
    order = np.argsort(-np.where(shown, probs[:, :topk], -1.0), axis=None, kind="stable")
    per_user: dict[str, list[int]] = {}
    for flat in order:
        r, c = divmod(int(flat), topk)
        if not shown[r, c]:
            break
        user, item = df["user_id"][r], int(items[r, c])
        kept = per_user.setdefault(user, [])
        if item not in kept and len(kept) < max_entries:
            kept.append(item)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w") as f:
        for user in dict.fromkeys(df["user_id"].to_list()):
            for item in per_user.get(user, []):
                f.write(f"{user}\t{item}\n")
    tmp.replace(out)
    return {"lines": sum(map(len, per_user.values())), "users": len(per_user)}
