"""Top-K metrics of one target per query: HR@K (= Recall@K) and NDCG@K = 1 / log2(rank + 1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


def hr_ndcg(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """``HR@K`` and ``NDCG@K`` for each K, from 1-based ranks (0 = missed).

    Example:
        >>> m = hr_ndcg(np.array([1, 3, 0, 2]), [1, 3])
        >>> m["HR@1"], m["HR@3"], round(m["NDCG@3"], 4)
        (0.25, 0.75, 0.5237)
    """
    ranks = np.asarray(ranks)
    found = ranks > 0
    gain = np.where(found, 1.0 / np.log2(np.maximum(ranks, 1) + 1), 0.0)
    out = {}
    for k in ks:
        within = found & (ranks <= k)
        out[f"HR@{k}"] = float(within.mean()) if len(ranks) else 0.0
        out[f"NDCG@{k}"] = float(np.where(within, gain, 0.0).mean()) if len(ranks) else 0.0
    return out


def cutoffs(num_beams: int) -> list[int]:
    """The standard K values that fit in ``num_beams`` predictions."""
    return [k for k in KS if k <= num_beams]
