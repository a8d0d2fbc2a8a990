"""The prefix index: a trie of every distinct SID of a catalog, kept as tensors on the model's
device, that gives a batch of beams its allowed next tokens.

- each trie node has a CSR row of outgoing edges ``(token, child)``; the node reached by a
  generated prefix is found with one ``searchsorted`` per generated token (no loop over beams);
- the allowed next tokens of the nodes of the first ``dense_depth`` levels (large fan-out, few
  nodes), and of any deeper level with a node of more than ``DENSE_WIDTH`` children, come from a
  dense mask table; those of the other nodes (the "tail": many nodes, small fan-out) from a
  window over their CSR row as wide as the widest node of their level;
- a complete SID allows end-of-sequence, and when nothing longer continues it, only that; a
  prefix that left the trie (or a finished sequence padded with end-of-sequence) allows only
  end-of-sequence, so the allowed set is never empty and never silently unconstrained.

After ``t`` generated tokens every beam is at a depth-``t`` node (or at end), so a step's mask
covers only level ``t``'s code tokens and end-of-sequence: one gather of those score columns,
one fill of the rest with -inf, one copy back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sidrec.core.decoding.trie import (
    Catalog,
    build_trie,
    dense_tables,
    local_vocabulary,
    sid_paths,
)
from sidrec.core.errors import SidrecError
from sidrec.core.sids import SidTable, code_token


class PrefixIndex:
    """A trie of a catalog's SIDs that gives the allowed next tokens of a batch of beams.

    Args:
        catalog: the distinct SIDs.
        token_ids: per level, the model's token id of each code (``token_ids[lv][code]``).
        eos_token_id: the model's end-of-sequence token.
        vocab_size: the width of the model's logits.
        device: where the tensors live.
        dense_depth: the first levels, whose nodes use the dense mask table (deeper levels do
            too where a node has more than :data:`DENSE_WIDTH` children), within
            :data:`DENSE_CELLS`.

    Example:
        >>> cat = Catalog.from_table(SidTable([[0, 1], [0, 2], [1, 1]], [2, 3]))
        >>> idx = PrefixIndex(cat, [[10, 11], [12, 13, 14]], eos_token_id=2, vocab_size=16)
        >>> idx.allowed_tokens(torch.tensor([[10], [11]])).nonzero().tolist()
        [[0, 13], [0, 14], [1, 13]]
    """

    def __init__(
        self,
        catalog: Catalog,
        token_ids: Sequence[Sequence[int]],
        eos_token_id: int,
        vocab_size: int,
        device: str | torch.device = "cpu",
        dense_depth: int = 2,
    ) -> None:
        if not catalog.codes:
            raise SidrecError("a prefix index needs at least one SID")
        self.catalog = catalog
        self.eos_token_id = eos_token_id
        pairs, to_global = local_vocabulary(catalog.codes, token_ids, eos_token_id, vocab_size)
        self.eos_local = len(pairs)
        self.width = len(pairs) + 1
        paths = sid_paths(catalog.codes, pairs)
        self.depth = depth = paths.shape[1]
        trie = build_trie(paths, self.eos_local)
        fan_out = np.diff(trie.indptr)
        # after t tokens every beam sits at a depth-t node or at end, so step t can only allow
        # level t's codes and end-of-sequence: masks cover those columns (eos last) only
        levels = np.array([lv for lv, _ in pairs])
        self.step_lo = np.searchsorted(levels, np.arange(depth + 1)).tolist()
        step_hi = np.searchsorted(levels, np.arange(depth + 1), side="right").tolist()
        step_cols = [
            np.append(np.arange(self.step_lo[t], step_hi[t]), self.eos_local)
            for t in range(depth + 1)
        ]
        self.level_start = start = trie.level_start
        # per level, the widest node's fan-out (the end node's is 1): the tail's window width
        self.tail_widths = [
            max(1, int(fan_out[start[t] : start[t + 1]].max(initial=1))) for t in range(depth + 1)
        ]
        dense = dense_tables(
            trie, step_cols, self.step_lo, self.tail_widths, dense_depth, self.eos_local
        )
        self.end, self.n_nodes = trie.end, trie.end + 1
        sid_of_node = np.full(self.n_nodes, -1, dtype=np.int64)
        sid_of_node[trie.node_of_sid] = np.arange(len(paths))
        first = trie.token[trie.indptr[:-1].clip(max=len(trie.token) - 1)]
        eos_only = (fan_out == 1) & (first == self.eos_local)
        to_local = np.full(vocab_size, -1, dtype=np.int64)
        to_local[to_global] = np.arange(self.width)
        dev = torch.device(device)
        self.to_local = torch.as_tensor(to_local, device=dev)
        self.edge_key = torch.as_tensor(trie.parent * self.width + trie.token, device=dev)
        self.edge_token = torch.as_tensor(trie.token, device=dev)
        self.edge_child = torch.as_tensor(trie.child, device=dev)
        self.indptr = torch.as_tensor(trie.indptr, device=dev)
        self.dense = {t: torch.as_tensor(d, device=dev) for t, d in dense.items()}
        # model ids of the local vocabulary (every SID token, then end-of-sequence), and per
        # step the local ids of the step's columns
        self.sid_vocab = torch.as_tensor(to_global, device=dev)
        self.step_local = [torch.as_tensor(c, device=dev) for c in step_cols]
        self.step_global = [self.sid_vocab[c] for c in self.step_local]
        self.sid_of_node = torch.as_tensor(sid_of_node, device=dev)
        self.eos_only = torch.as_tensor(eos_only, device=dev)

    @classmethod
    def for_tokenizer(
        cls,
        table: SidTable,
        tok: object,
        vocab_size: int,
        device: str | torch.device = "cpu",
        dense_depth: int = 2,
    ) -> PrefixIndex:
        """The index of ``table``'s SIDs, with token ids from ``tok`` (which has the SID tokens)."""
        ids = [
            tok.convert_tokens_to_ids([code_token(lv, c) for c in range(k)])
            for lv, k in enumerate(table.codebook_sizes)
        ]
        unk = getattr(tok, "unk_token_id", None)
        if any(i is None or i == unk for level in ids for i in level):
            raise SidrecError("the tokenizer lacks SID tokens of this SID table (wrong --sid?)")
        catalog = Catalog.from_table(table)
        return cls(catalog, ids, tok.eos_token_id, vocab_size, device, dense_depth)

    def to(self, device: str | torch.device) -> PrefixIndex:
        """Move every tensor to ``device`` (in place); returns ``self``."""
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
            elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
                setattr(self, name, [v.to(device) for v in value])
            elif isinstance(value, dict):
                setattr(self, name, {k: v.to(device) for k, v in value.items()})
        return self

    def child(self, node: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Children of ``node`` (B,) along ``tokens`` (B,) model ids; ``end`` where none."""
        local = self.to_local[tokens]
        key = node * self.width + local
        pos = torch.searchsorted(self.edge_key, key).clamp(max=len(self.edge_key) - 1)
        hit = (self.edge_key[pos] == key) & (local >= 0)
        return torch.where(hit, self.edge_child[pos], self.end)

    def nodes(self, generated: torch.Tensor) -> torch.Tensor:
        """Trie node reached by each row of ``generated`` (B, t) model token ids -> (B,)."""
        node = torch.zeros(generated.shape[0], dtype=torch.long, device=generated.device)
        for j in range(generated.shape[1]):
            node = self.child(node, generated[:, j])
        return node

    def step_bias(self, node: torch.Tensor, step: int) -> torch.Tensor:
        """What ``step`` (tokens generated so far) allows after each of ``node`` (B,): an
        additive bias (B, W) over ``columns(step)``, 0 where allowed and -inf where not."""
        t = min(step, self.depth)
        width = self.columns(t).shape[0]
        if t in self.dense:
            table = self.dense[t]
            rows = torch.where(node == self.end, table.shape[0] - 1, node - self.level_start[t])
            return table.index_select(0, rows)
        offsets = torch.arange(self.tail_widths[t], device=node.device)
        start = self.indptr[node]
        valid = offsets < (self.indptr[node + 1] - start)[:, None]
        edge = (start[:, None] + offsets).clamp(max=len(self.edge_token) - 1)
        token = self.edge_token[edge]
        col = torch.where(token == self.eos_local, width - 1, token - self.step_lo[t])
        # invalid window slots write into a spare column that is dropped
        col = torch.where(valid, col, width)
        bias = torch.full((node.shape[0], width + 1), float("-inf"), device=node.device)
        return bias.scatter_(1, col, 0.0)[:, :width]

    def allowed_tokens(self, generated: torch.Tensor) -> torch.Tensor:
        """Allowed next model tokens after each row of ``generated`` (B, t) -> mask (B, V)."""
        step = generated.shape[1]
        bias = self.step_bias(self.nodes(generated), step)
        full = torch.zeros(
            generated.shape[0], self.to_local.shape[0], dtype=torch.bool, device=bias.device
        )
        full[:, self.columns(step)] = bias == 0
        return full

    def local_columns(self, step: int) -> torch.Tensor:
        """Positions (W,) of ``columns(step)`` in ``sid_vocab`` (every SID token, then
        end-of-sequence)."""
        return self.step_local[min(step, self.depth)]

    def columns(self, step: int) -> torch.Tensor:
        """Model ids (W,) of the tokens ``step`` can allow at all: level ``step``'s codes, then
        end-of-sequence."""
        return self.step_global[min(step, self.depth)]

    def restrict(self, kept: torch.Tensor, node: torch.Tensor, step: int) -> torch.Tensor:
        """Mask ``kept`` (B, W), the scores of ``columns(step)`` after each of ``node`` (B,), in
        place: -inf where not allowed, and end-of-sequence at 0 where it is the only way on (a
        complete SID), so an item's score is the log-probability of its SID whatever the model
        says about ending."""
        kept.add_(self.step_bias(node, step))
        kept[:, -1] = torch.where(self.eos_only[node], 0.0, kept[:, -1])
        return kept

    def constrain(self, scores: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """``scores`` (B, V) log-probabilities after ``generated`` (B, t), in place: disallowed
        tokens at -inf (and a forced end-of-sequence at 0, see :meth:`restrict`)."""
        step = generated.shape[1]
        cols = self.columns(step)
        kept = self.restrict(scores.index_select(1, cols), self.nodes(generated), step)
        scores.fill_(float("-inf"))
        return scores.index_copy_(1, cols, kept)

    def sids_of(self, generated: torch.Tensor) -> torch.Tensor:
        """SID index spelled by each row of ``generated`` (B, t), up to its first
        end-of-sequence; -1 for a row that is not a complete catalog SID."""
        node = torch.zeros(generated.shape[0], dtype=torch.long, device=generated.device)
        sid = torch.full_like(node, -1)
        done = torch.zeros_like(node, dtype=torch.bool)
        for j in range(generated.shape[1]):
            tokens = generated[:, j]
            ending = ~done & (tokens == self.eos_token_id)
            sid = torch.where(ending, self.sid_of_node[node], sid)
            done |= ending
            node = torch.where(done, node, self.child(node, tokens))
        return sid
