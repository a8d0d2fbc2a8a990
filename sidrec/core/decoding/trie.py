"""The trie of a catalog's SIDs, built as arrays: its local vocabulary, the CSR edges of its
nodes (numbered level by level) and the dense mask tables of the levels that read one. Pure
numpy; :class:`~sidrec.core.decoding.index.PrefixIndex` puts the result on a device."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sidrec.core.errors import SidrecError
from sidrec.core.sids import SidTable

# dense mask tables (one row per node) are kept while all of them stay below this many cells
DENSE_CELLS = 1 << 26
# a deeper level whose widest node has more children than this reads the dense table too
DENSE_WIDTH = 64


@dataclass(frozen=True)
class Catalog:
    """The distinct SIDs of a table and the items behind each.

    ``codes[s]`` is SID ``s``'s code list; ``items[s]`` its items (ascending; several where
    items share a SID); ``item_sid[i]`` the SID index of item ``i``.
    """

    codes: list[tuple[int, ...]]
    items: list[list[int]]
    item_sid: np.ndarray

    @classmethod
    def from_table(cls, table: SidTable) -> Catalog:
        index: dict[tuple[int, ...], int] = {}
        items: list[list[int]] = []
        item_sid = np.empty(len(table.codes), dtype=np.int64)
        for item, codes in enumerate(table.codes):
            s = index.setdefault(tuple(codes), len(index))
            if s == len(items):
                items.append([])
            items[s].append(item)
            item_sid[item] = s
        return cls(list(index), items, item_sid)

    @property
    def representative(self) -> np.ndarray:
        """Per SID, the one item the strict rule credits (the smallest item id)."""
        return np.array([its[0] for its in self.items], dtype=np.int64)


class Trie(NamedTuple):
    """A trie over SIDs' local token paths. Node 0 is the root; nodes of depth d follow those
    of depth d - 1; ``end`` (the last node) is reached after end-of-sequence, and by any prefix
    outside the trie, and allows only end-of-sequence. Edges are sorted by (parent, token)."""

    parent: np.ndarray  # int64 [E]: each edge's source node
    token: np.ndarray  # int64 [E]: its local token
    child: np.ndarray  # int64 [E]: its target node
    indptr: np.ndarray  # int64 [n_nodes + 1]: CSR row pointers into the edges
    level_start: list[int]  # the first node id of each depth, then of end (depth + 2 entries)
    node_of_sid: np.ndarray  # int64 [n_sids]: each SID's last node
    end: int


def local_vocabulary(
    codes: Sequence[Sequence[int]],
    token_ids: Sequence[Sequence[int]],
    eos_token_id: int,
    vocab_size: int,
) -> tuple[list[tuple[int, int]], list[int]]:
    """The (level, code) pairs in use, sorted, and the model id of each, then of
    end-of-sequence (``token_ids[lv][code]``: the model's id of a code)."""
    pairs = sorted({(lv, c) for sid in codes for lv, c in enumerate(sid)})
    to_global = [token_ids[lv][c] for lv, c in pairs] + [eos_token_id]
    if len(set(to_global)) != len(pairs) + 1 or max(to_global) >= vocab_size:
        raise SidrecError(
            f"SID and end-of-sequence token ids must be distinct and below the vocabulary "
            f"size {vocab_size}"
        )
    return pairs, to_global


def sid_paths(codes: Sequence[Sequence[int]], pairs: list[tuple[int, int]]) -> np.ndarray:
    """Each SID as local token ids, int64 [n_sids, depth], -1 past its end."""
    local = {p: i for i, p in enumerate(pairs)}
    paths = np.full((len(codes), max(len(c) for c in codes)), -1, dtype=np.int64)
    for s, sid in enumerate(codes):
        paths[s, : len(sid)] = [local[(lv, c)] for lv, c in enumerate(sid)]
    return paths


def build_trie(paths: np.ndarray, eos_local: int) -> Trie:
    """The trie of ``paths`` (int64 [n_sids, depth], -1 past a SID's end), with an
    end-of-sequence edge (local id ``eos_local``) from every SID's last node to ``end``.

    Example:
        >>> t = build_trie(np.array([[0, 2], [0, 3], [1, -1]]), eos_local=4)
        >>> t.level_start, t.end, t.node_of_sid.tolist()
        ([0, 1, 3, 5], 5, [3, 4, 2])
    """
    depth = paths.shape[1]
    lengths = (paths >= 0).sum(1)
    node_of_sid = np.zeros(len(paths), dtype=np.int64)  # node of each SID's prefix so far
    parents, tokens, children = [], [], []
    n_nodes, level_start = 1, [0, 1]
    for d in range(depth):
        live = lengths > d
        keys = np.stack([node_of_sid[live], paths[live, d]], 1)
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        child = n_nodes + np.arange(len(uniq))
        parents.append(uniq[:, 0])
        tokens.append(uniq[:, 1])
        children.append(child)
        node_of_sid[live] = child[inverse.reshape(-1)]
        n_nodes += len(uniq)
        level_start.append(n_nodes)
    end = n_nodes
    parents.append(np.append(node_of_sid, end))
    tokens.append(np.full(len(paths) + 1, eos_local))
    children.append(np.full(len(paths) + 1, end))
    parent, token, child = map(np.concatenate, (parents, tokens, children))
    order = np.lexsort((token, parent))
    indptr = np.zeros(end + 2, dtype=np.int64)
    np.add.at(indptr, parent + 1, 1)
    return Trie(
        parent[order], token[order], child[order], np.cumsum(indptr), level_start, node_of_sid, end
    )


def dense_tables(
    trie: Trie,
    step_cols: list[np.ndarray],
    step_lo: list[int],
    widths: list[int],
    dense_depth: int,
    eos_local: int,
) -> dict[int, np.ndarray]:
    """The dense mask tables, float32 [nodes of level t + 1, len(step_cols[t])] per level t
    that reads one: an additive bias over the step's columns (0 allowed, -inf not), and a last
    row for ``end`` (end-of-sequence only).

    A level reads a table when it is one of the first ``dense_depth`` levels or its widest node
    (``widths[t]``) is wider than :data:`DENSE_WIDTH`, while the tables stay below
    :data:`DENSE_CELLS` cells; the others read a window over each node's CSR row."""
    start, parent, token = trie.level_start, trie.parent, trie.token
    dense, cells = {}, 0
    for t in range(len(start) - 2):
        n_t, w_t = start[t + 1] - start[t], len(step_cols[t])
        wanted = t < dense_depth or widths[t] > DENSE_WIDTH
        if not wanted or cells + (n_t + 1) * w_t > DENSE_CELLS:
            continue
        cells += (n_t + 1) * w_t
        table = np.full((n_t + 1, w_t), -np.inf, dtype=np.float32)
        edges = (parent >= start[t]) & (parent < start[t + 1])
        cols = np.where(token[edges] == eos_local, w_t - 1, token[edges] - step_lo[t])
        table[parent[edges] - start[t], cols] = 0.0
        table[n_t, w_t - 1] = 0.0
        dense[t] = table
    return dense
