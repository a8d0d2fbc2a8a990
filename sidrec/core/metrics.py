"""Top-K metrics of one target per query: HR@K (= Recall@K) and NDCG@K = 1 / log2(rank + 1);
and a ranker's AUC over (query, candidate) pairs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import bootstrap, rankdata

from sidrec.core.errors import SidrecError

KS = (1, 3, 5, 10, 20, 50)


def target_ranks(ranked: np.ndarray, target: np.ndarray) -> np.ndarray:
    """1-based rank of ``target[i]`` in row ``ranked[i]``; 0 where it is absent.

    Args:
        ranked: (N, K) predictions, best first (-1 = no prediction).
        target: (N,) the true answer of each row.

    Example:
        >>> target_ranks(np.array([[3, 1], [2, 5]]), np.array([1, 7])).tolist()
        [2, 0]
    """
    hit = ranked == target[:, None]
    return np.where(hit.any(1), hit.argmax(1) + 1, 0)


def user_gains(ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query HR@K and NDCG@K, (N,) each, from 1-based ranks (0 = missed).

    Example:
        >>> hit, gain = user_gains(np.array([1, 3, 0]), 2)
        >>> hit.tolist(), gain.tolist()
        ([1.0, 0.0, 0.0], [1.0, 0.0, 0.0])
    """
    ranks = np.asarray(ranks)
    within = (ranks > 0) & (ranks <= k)
    gain = np.where(within, 1.0 / np.log2(np.maximum(ranks, 1) + 1), 0.0)
    return within.astype(float), gain


def hr_ndcg(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """``HR@K`` and ``NDCG@K`` for each K, from 1-based ranks (0 = missed).

    Example:
        >>> m = hr_ndcg(np.array([1, 3, 0, 2]), [1, 3])
        >>> m["HR@1"], m["HR@3"], round(m["NDCG@3"], 4)
        (0.25, 0.75, 0.5327)
    """
    out = {}
    for k in ks:
        hit, gain = user_gains(ranks, k)
        out[f"HR@{k}"] = float(hit.mean()) if len(hit) else 0.0
        out[f"NDCG@{k}"] = float(gain.mean()) if len(gain) else 0.0
    return out


def _interval(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values`` (N,)."""
    ci = bootstrap(
        (values,), np.mean, n_resamples=resamples, method="percentile", random_state=seed
    ).confidence_interval
    return float(ci.low), float(ci.high)


def metric_interval(
    ranks: np.ndarray, k: int, resamples: int = 2000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95% bootstrap intervals over queries of HR@K and NDCG@K from 1-based ranks (0 =
    missed): how far a published figure may be from ours by chance of the test users."""
    hit, gain = user_gains(ranks, k)
    return {
        f"HR@{k}": _interval(hit, resamples, seed),
        f"NDCG@{k}": _interval(gain, resamples, seed),
    }


def paired_difference(
    ranks_a: np.ndarray, ranks_b: np.ndarray, k: int, resamples: int = 2000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """HR@K and NDCG@K of A minus B on the same queries, with a 95% bootstrap interval over
    queries (scipy's percentile bootstrap of the per-query differences): a gain is real when
    the interval excludes 0.

    Args:
        ranks_a: (N,) 1-based ranks of model A's target per query (0 = missed).
        ranks_b: (N,) model B's, same queries in the same order.
    """
    if len(ranks_a) != len(ranks_b) or not len(ranks_a):
        raise SidrecError(f"need the same non-empty queries, got {len(ranks_a)} and {len(ranks_b)}")
    out = {}
    for name, a, b in zip(
        ("HR", "NDCG"), user_gains(ranks_a, k), user_gains(ranks_b, k), strict=True
    ):
        diff = a - b
        low, high = _interval(diff, resamples, seed)
        out[f"{name}@{k}"] = {"difference": float(diff.mean()), "ci95_low": low, "ci95_high": high}
    return out


def drop_history(
    ranked: np.ndarray, scores: np.ndarray, histories: Sequence[Sequence[int]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first ``k`` items that are not in its history, with their scores.

    Args:
        ranked: (N, B) items, best first (B >= k + the longest history keeps k per row).
        scores: (N, B) their scores.

    Returns:
        (N, k) items and scores; -1 and -inf where a row ran out.

    Example:
        >>> drop_history(np.array([[4, 1, 2]]), np.array([[3.0, 2.0, 1.0]]), [[4]], 2)[0].tolist()
        [[1, 2]]
    """
    items = np.full((len(ranked), k), -1, dtype=ranked.dtype)
    kept = np.full((len(ranked), k), -np.inf, dtype=float)
    for r, (row, hist) in enumerate(zip(ranked, histories, strict=True)):
        keep = ~np.isin(row, np.asarray(hist, dtype=row.dtype))
        found = row[keep][:k]
        items[r, : len(found)] = found
        kept[r, : len(found)] = scores[r][keep][:k]
    return items, kept


def cutoffs(num_beams: int) -> list[int]:
    """The standard K values that fit in ``num_beams`` predictions."""
    return [k for k in KS if k <= num_beams]


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative
    (ties count half), by the Mann-Whitney rank sum.

    Args:
        labels: (P,) 1 for a positive pair, 0 for a negative one.
        scores: (P,) the ranker's scores.

    Example:
        >>> auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 0.1]))
        0.75
    """
    labels = np.asarray(labels).astype(bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if not pos or not neg:
        raise SidrecError(f"AUC needs positives and negatives, got {pos} and {neg}")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def group_auc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """The mean AUC of the groups (queries) that hold both a positive and a negative pair, each
    group counting once: how well the ranker orders one user's candidates.

    Args:
        groups: (P,) the query of each pair, pairs of a query adjacent.
        labels: (P,) 1 / 0.
        scores: (P,) the ranker's scores.

    Example:
        >>> group_auc(np.array([0, 0, 1, 1, 2]), np.array([1, 0, 0, 1, 1]),
        ...           np.array([0.9, 0.1, 0.8, 0.3, 0.5]))
        0.5
    """
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    ends = np.r_[starts[1:], len(groups)]
    found = [
        auc(labels[a:b], scores[a:b])
        for a, b in zip(starts, ends, strict=True)
        if 0 < labels[a:b].sum() < b - a
    ]
    if not found:
        raise SidrecError("group AUC needs a query with both a positive and a negative pair")
    return float(np.mean(found))
