"""Make every SID unique.

- ``reassign``: within a group of items sharing a SID, the item closest to the shared code keeps
  it; each other item moves to the nearest last-level code that no item with the same prefix
  uses. A prefix with more items than codes falls back to ``append`` for its leftovers.
- ``append`` (TIGER): every item of a colliding group gets one extra token, 0, 1, 2, ..., so
  SIDs grow by one level only where needed and no SID is a prefix of another.
"""

from __future__ import annotations

from collections import defaultdict
from enum import Enum

import numpy as np


class DedupRule(str, Enum):
    REASSIGN = "reassign"
    APPEND = "append"


def _groups(codes: list[list[int]]) -> dict[tuple[int, ...], list[int]]:
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, c in enumerate(codes):
        groups[tuple(c)].append(i)
    return groups


def append_tokens(codes: list[list[int]]) -> list[list[int]]:
    """Append a de-duplication code to the items of every colliding group.

    Example:
        >>> append_tokens([[1, 2], [1, 2], [3, 4]])
        [[1, 2, 0], [1, 2, 1], [3, 4]]
    """
    out = [list(c) for c in codes]
    for members in _groups(codes).values():
        if len(members) > 1:
            for rank, i in enumerate(members):
                out[i].append(rank)
    return out


def reassign_last_level(
    codes: np.ndarray, residual: np.ndarray, last_codebook: np.ndarray
) -> list[list[int]]:
    """Move colliding items to the nearest free last-level code of their prefix.

    Args:
        codes: int [N, L] SIDs with collisions.
        residual: float [N, D] what is left of each item before the last level.
        last_codebook: float [K, D] the last level's codes.

    Returns:
        Per item its codes; unique whenever no prefix holds more than K items, and otherwise
        made unique by :func:`append_tokens` for the leftovers.
    """
    out = codes.tolist()
    used: dict[tuple[int, ...], set[int]] = defaultdict(set)
    for c in out:
        used[tuple(c[:-1])].add(c[-1])
    for members in _groups(out).values():
        if len(members) == 1:
            continue
        dist = {i: ((last_codebook - residual[i]) ** 2).sum(axis=1) for i in members}
        code = out[members[0]][-1]
        keep = min(members, key=lambda i: dist[i][code])
        for i in sorted((m for m in members if m != keep), key=lambda m: dist[m][code]):
            taken = used[tuple(out[i][:-1])]
            free = next(
                (int(k) for k in np.argsort(dist[i], kind="stable") if int(k) not in taken), None
            )
            if free is not None:
                out[i][-1] = free
                taken.add(free)
    return append_tokens(out)
