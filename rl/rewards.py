"""Rewards for a group of beams: plain functions of arrays, one row per prompt.

Every function takes ``beams`` (N, G): the SID index (into the catalog's distinct SIDs) of each
beam, best first, and ``target`` (N,): the target's SID index, and returns (N, G) rewards.
The target always comes from the example row itself.

================  ==========================================================================
name              reward of the beam at rank i (0-based) in a group of G
================  ==========================================================================
``rule``          1 if the beam is the target, else 0
``ranking``       ``rule`` + an NDCG-shaped penalty: a wrong beam gets
                  -(1 / log2(i + 2)) / sum_{j<G} 1 / log2(j + 2); a group where no beam hits
                  gets 0 everywhere (MiniOneRec's ``ranking``)
``ranking_only``  the penalty alone (``ranking`` minus ``rule``), 0 where no beam hits
``semantic``      cosine similarity of the beam's item embedding to the target's
================  ==========================================================================

Rewards combine as a weighted sum (``rl.rewards``: ``{name: weight}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from sidrec.errors import SidrecError


def rule(beams: np.ndarray, target: np.ndarray) -> np.ndarray:
    """1 where a beam is the target, else 0.

    Example:
        >>> rule(np.array([[3, 1, 2]]), np.array([1])).tolist()
        [[0.0, 1.0, 0.0]]
    """
    return (np.asarray(beams) == np.asarray(target)[:, None]).astype(np.float64)


def rank_penalty(beams: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The NDCG-shaped penalty of wrong beams, 0 in groups where no beam hits.

    Example:
        >>> p = rank_penalty(np.array([[3, 1]]), np.array([1]))
        >>> bool(np.isclose(p[0, 0], -1 / (1 + 1 / np.log2(3)))), float(p[0, 1])
        (True, 0.0)
    """
    hit = rule(beams, target)
    g = hit.shape[1]
    discount = 1.0 / np.log2(np.arange(g) + 2.0)
    penalty = -(discount / discount.sum())[None, :] * (1.0 - hit)
    return penalty * hit.any(axis=1, keepdims=True)


def ranking(beams: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``rule`` plus :func:`rank_penalty`."""
    return rule(beams, target) + rank_penalty(beams, target)


def semantic(beams: np.ndarray, target: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of each beam's vector to the target's (``item_vectors``: (S, D), one
    row per SID index: the embedding of the item that SID stands for)."""
    unit = item_vectors / np.maximum(np.linalg.norm(item_vectors, axis=1, keepdims=True), 1e-12)
    return np.einsum("ngd,nd->ng", unit[np.asarray(beams)], unit[np.asarray(target)])


# names (MiniOneRec's) -> whether the function needs item vectors
REWARDS: dict[str, Callable[..., np.ndarray]] = {
    "rule": rule,
    "ranking": ranking,
    "ranking_only": rank_penalty,
    "semantic": semantic,
}
NEEDS_VECTORS = {"semantic"}


def check_rewards(weights: Mapping[str, float], have_vectors: bool) -> None:
    """Raise for an unknown reward name, an empty or all-zero weighting, or ``semantic``
    without item embeddings."""
    unknown = sorted(set(weights) - set(REWARDS))
    if unknown:
        raise SidrecError(f"rl.rewards: unknown reward {unknown}; choose from {sorted(REWARDS)}")
    if not any(weights.values()):
        raise SidrecError("rl.rewards needs at least one reward with a non-zero weight")
    if not have_vectors and any(weights[n] for n in NEEDS_VECTORS if n in weights):
        raise SidrecError(
            "rl.rewards.semantic needs item embeddings: set paths.embeddings to the rq stage's "
            "embedding directory"
        )


def combined(
    weights: Mapping[str, float],
    beams: np.ndarray,
    target: np.ndarray,
    item_vectors: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Each weighted reward (N, G) by name, and their weighted sum under ``"total"``."""
    out: dict[str, np.ndarray] = {}
    for name, weight in weights.items():
        if not weight:
            continue
        fn = REWARDS[name]
        out[name] = fn(beams, target, item_vectors) if name in NEEDS_VECTORS else fn(beams, target)
    out["total"] = sum(weights[n] * r for n, r in out.items())
    return out
