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
``sasrec``        the share of the group's SASRec probability that falls on the beam's item:
                  softmax over the G beams of a trained SASRec's scores after the row's
                  history (a classic model's opinion, dense where ``rule`` is 0)
================  ==========================================================================

Rewards combine as a weighted sum (``rl.rewards``: ``{name: weight}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from sidrec.core.errors import SidrecError


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


def sasrec(beams: np.ndarray, target: np.ndarray, beam_scores: np.ndarray) -> np.ndarray:
    """Softmax over each group of ``beam_scores`` (N, G): a SASRec model's score of each beam's
    item after the row's history (``target`` is unused: the reward is the classic model's
    opinion, not the answer).

    Example:
        >>> sasrec(np.array([[0, 1]]), np.array([1]), np.array([[0.0, np.log(3.0)]])).tolist()
        [[0.25, 0.75]]
    """
    z = np.asarray(beam_scores, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# names (MiniOneRec's) -> the function
REWARDS: dict[str, Callable[..., np.ndarray]] = {
    "rule": rule,
    "ranking": ranking,
    "ranking_only": rank_penalty,
    "semantic": semantic,
    "sasrec": sasrec,
}
NEEDS_VECTORS = {"semantic"}
NEEDS_SASREC = {"sasrec"}


def check_rewards(
    weights: Mapping[str, float], have_vectors: bool, have_sasrec: bool = False
) -> None:
    """Raise for an unknown reward name, an empty or all-zero weighting, ``semantic``
    without item embeddings or ``sasrec`` without a SASRec model."""
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
    if not have_sasrec and any(weights[n] for n in NEEDS_SASREC if n in weights):
        raise SidrecError(
            "rl.rewards.sasrec needs a trained SASRec: set paths.sasrec to the output of "
            "`sidrec baseline sasrec` on the same dataset"
        )


def combined(
    weights: Mapping[str, float],
    beams: np.ndarray,
    target: np.ndarray,
    item_vectors: np.ndarray | None = None,
    beam_scores: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Each weighted reward (N, G) by name, and their weighted sum under ``"total"``
    (``item_vectors`` for ``semantic``, ``beam_scores`` (N, G) for ``sasrec``)."""
    out: dict[str, np.ndarray] = {}
    for name, weight in weights.items():
        if not weight:
            continue
        fn = REWARDS[name]
        if name in NEEDS_VECTORS:
            out[name] = fn(beams, target, item_vectors)
        elif name in NEEDS_SASREC:
            out[name] = fn(beams, target, beam_scores)
        else:
            out[name] = fn(beams, target)
    out["total"] = sum(weights[n] * r for n, r in out.items())
    return out
