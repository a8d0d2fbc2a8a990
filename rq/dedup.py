"""Make every SID unique.

- ``reassign``: within a group of items sharing a SID, the item closest to the shared code keeps
  it; each other item moves to the nearest last-level code that no item with the same prefix
  uses. A prefix with more items than codes falls back to ``append`` for its leftovers.
- ``append`` (TIGER): every item of a colliding group gets one extra token, 0, 1, 2, ..., so
  SIDs grow by one level only where needed and no SID is a prefix of another.

Both take optional ``fixed`` SIDs: items that already have SIDs which must not change (``sid
assign`` codes a grown catalog this way). New items avoid them; where a prefix is full, a new
item joins the nearest group whose fixed SIDs carry an extra token and takes the next one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from enum import Enum

import numpy as np

from sidrec.core.errors import SidrecError


class DedupRule(str, Enum):
    REASSIGN = "reassign"
    APPEND = "append"


def _groups(codes: list[list[int]]) -> dict[tuple[int, ...], list[int]]:
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, c in enumerate(codes):
        groups[tuple(c)].append(i)
    return groups


def append_tokens(
    codes: Sequence[Sequence[int]], fixed: Sequence[Sequence[int]] = ()
) -> list[list[int]]:
    """Append a de-duplication code to every item whose SID is shared.

    Args:
        codes: per new item, its base codes (all of the same length L).
        fixed: SIDs that must not change; a new item never lands on one or on a prefix of one.

    Example:
        >>> append_tokens([[1, 2], [1, 2], [3, 4]])
        [[1, 2, 0], [1, 2, 1], [3, 4]]
        >>> append_tokens([[1, 2]], fixed=[[1, 2, 0], [1, 2, 1]])
        [[1, 2, 2]]
    """
    out = [list(c) for c in codes]
    depth = len(out[0]) if out else 0
    exact = {tuple(c) for c in fixed}
    extra: dict[tuple[int, ...], set[int]] = defaultdict(set)
    for c in fixed:
        if len(c) > depth:
            extra[tuple(c[:depth])].add(c[depth])
    for base, members in _groups(out).items():
        if len(members) == 1 and base not in extra and base not in exact:
            continue
        if base in exact:
            raise SidrecError(
                f"{len(members)} new item(s) need SID {list(base)}, which an existing item holds "
                "and every other last-level code of its prefix is taken; rebuild the SIDs"
            )
        for i in members:
            token = next(t for t in range(len(extra[base]) + 1) if t not in extra[base])
            extra[base].add(token)
            out[i].append(token)
    return out


def reassign_last_level(
    codes: np.ndarray,
    residual: np.ndarray,
    last_codebook: np.ndarray,
    fixed: Sequence[Sequence[int]] = (),
) -> list[list[int]]:
    """Move colliding items to the nearest free last-level code of their prefix.

    Args:
        codes: int [N, L] SIDs with collisions.
        residual: float [N, D] what is left of each item before the last level.
        last_codebook: float [K, D] the last level's codes.
        fixed: SIDs of other items that must not change (their codes count as taken).

    Returns:
        Per item its codes; unique whenever no prefix holds more than K items, and otherwise
        made unique by :func:`append_tokens` for the leftovers.
    """
    out = codes.tolist()
    depth = codes.shape[1]
    held = {tuple(c[:depth]) for c in fixed}
    exact = {tuple(c) for c in fixed if len(c) == depth}  # fixed SIDs with no extra token
    used: dict[tuple[int, ...], set[int]] = defaultdict(set)
    for c in [*out, *(c[:depth] for c in fixed)]:
        used[tuple(c[:-1])].add(c[-1])
    for base, members in _groups(out).items():
        if len(members) == 1 and base not in held:
            continue
        dist = {i: ((last_codebook - residual[i]) ** 2).sum(axis=1) for i in members}
        code = base[-1]
        order = sorted(members, key=lambda m: dist[m][code])
        for i in order if base in held else order[1:]:  # the closest keeps a code nobody holds
            taken = used[base[:-1]]
            ranked = [int(k) for k in np.argsort(dist[i], kind="stable")]
            free = next((k for k in ranked if k not in taken), None)
            if free is None and base in exact:
                # prefix full: join the nearest group whose fixed SIDs carry an extra token
                free = next((k for k in ranked if (*base[:-1], k) not in exact), None)
            if free is not None:
                out[i][-1] = free
                taken.add(free)
    return append_tokens(out, fixed)
