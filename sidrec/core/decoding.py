"""Constrained beam search over a catalog's SIDs, shared by ``rl`` and ``evaluate``.

A :class:`PrefixIndex` is a trie of every distinct SID, kept as tensors on the model's device:

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

import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, PreTrainedModel

from sidrec.core.errors import SidrecError
from sidrec.core.sids import SidTable, code_token

# dense mask tables (one row per node) are kept while all of them stay below this many cells
DENSE_CELLS = 1 << 26
# a deeper level whose widest node has more children than this reads the dense table too
DENSE_WIDTH = 64
# how a step's log-probabilities are formed (StepHead)
HEADS = ("full", "restricted")
# config keys of models whose logits are not just hidden state x output head
SCALED_LOGITS = ("final_logit_softcapping", "logit_scale")
# the largest batch batch_size=auto tries
AUTO_BATCH_CAP = 1024
# output heads already found linear (StepHead is built on every search)
_LINEAR_HEADS: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


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
        depth = max(len(c) for c in catalog.codes)
        # local vocabulary: the (level, code) pairs in use, then end-of-sequence
        pairs = sorted({(lv, c) for codes in catalog.codes for lv, c in enumerate(codes)})
        local = {p: i for i, p in enumerate(pairs)}
        self.eos_local = len(pairs)
        width = len(pairs) + 1
        to_global = [token_ids[lv][c] for lv, c in pairs] + [eos_token_id]
        if len(set(to_global)) != width or max(to_global) >= vocab_size:
            raise SidrecError(
                f"SID and end-of-sequence token ids must be distinct and below the vocabulary "
                f"size {vocab_size}"
            )
        # padded local token paths, -1 past a SID's end: (n_sids, depth)
        paths = np.full((len(catalog.codes), depth), -1, dtype=np.int64)
        for s, codes in enumerate(catalog.codes):
            paths[s, : len(codes)] = [local[(lv, c)] for lv, c in enumerate(codes)]
        lengths = (paths >= 0).sum(1)

        # nodes level by level: node ids of depth d follow those of depth d - 1
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
        # now node_of_sid holds each SID's last node; end is reached after end-of-sequence
        # (and by any prefix outside the trie) and only allows end-of-sequence
        end = n_nodes
        n_nodes += 1
        parents.append(np.append(node_of_sid, end))
        tokens.append(np.full(len(paths) + 1, self.eos_local))
        children.append(np.full(len(paths) + 1, end))
        parent = np.concatenate(parents)
        token = np.concatenate(tokens)
        child = np.concatenate(children)
        order = np.lexsort((token, parent))
        parent, token, child = parent[order], token[order], child[order]
        indptr = np.zeros(n_nodes + 1, dtype=np.int64)
        np.add.at(indptr, parent + 1, 1)
        indptr = np.cumsum(indptr)
        fan_out = np.diff(indptr)

        # after t tokens every beam sits at a depth-t node or at end, so step t can only allow
        # level t's codes and end-of-sequence: masks cover those columns (eos last) only
        levels = np.array([lv for lv, _ in pairs])
        self.step_lo = np.searchsorted(levels, np.arange(depth + 1)).tolist()
        step_hi = np.searchsorted(levels, np.arange(depth + 1), side="right").tolist()
        step_cols = [
            np.append(np.arange(self.step_lo[t], step_hi[t]), self.eos_local)
            for t in range(depth + 1)
        ]
        # per level, the widest node's fan-out (the end node's is 1)
        widths = [
            max(1, int(fan_out[level_start[t] : level_start[t + 1]].max(initial=1)))
            for t in range(depth + 1)
        ]
        # a level reads a dense table (one row per node) when it is one of the first
        # dense_depth levels or its widest node would make a window wider than DENSE_WIDTH,
        # while the tables stay below DENSE_CELLS cells; the others read a window over each
        # node's CSR row, as wide as their own widest node
        self.level_start = level_start
        self.tail_widths = widths
        dense, cells = {}, 0
        for t in range(depth):
            n_t, w_t = level_start[t + 1] - level_start[t], len(step_cols[t])
            if (
                not (t < dense_depth or widths[t] > DENSE_WIDTH)
                or cells + (n_t + 1) * w_t > DENSE_CELLS
            ):
                continue
            cells += (n_t + 1) * w_t
            # an additive bias over the step's columns (0 allowed, -inf not), plus a last row
            # for end (end-of-sequence only)
            table_t = np.full((n_t + 1, w_t), -np.inf, dtype=np.float32)
            edges = (parent >= level_start[t]) & (parent < level_start[t + 1])
            cols = np.where(token[edges] == self.eos_local, w_t - 1, token[edges] - self.step_lo[t])
            table_t[parent[edges] - level_start[t], cols] = 0.0
            table_t[n_t, w_t - 1] = 0.0
            dense[t] = table_t
        sid_of_node = np.full(n_nodes, -1, dtype=np.int64)
        sid_of_node[node_of_sid] = np.arange(len(paths))
        eos_only = (fan_out == 1) & (token[indptr[:-1].clip(max=len(token) - 1)] == self.eos_local)

        to_local = np.full(vocab_size, -1, dtype=np.int64)
        to_local[to_global] = np.arange(width)
        dev = torch.device(device)
        self.width = width
        self.end = end
        self.depth = depth
        self.n_nodes = n_nodes
        self.to_local = torch.as_tensor(to_local, device=dev)
        self.edge_key = torch.as_tensor(parent * width + token, device=dev)
        self.edge_token = torch.as_tensor(token, device=dev)
        self.edge_child = torch.as_tensor(child, device=dev)
        self.indptr = torch.as_tensor(indptr, device=dev)
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


class SidConstraint(LogitsProcessor):
    """A ``generate`` logits processor that lets only catalog SIDs be generated.

    ``prompt_length`` is the (left-padded) prompt width: tokens after it are the generated ones.
    """

    def __init__(self, index: PrefixIndex, prompt_length: int) -> None:
        self.index = index
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.index.constrain(scores, input_ids[:, self.prompt_length :])


def beam_config(num_beams: int, max_new_tokens: int, eos: int, pad: int) -> GenerationConfig:
    """Plain beam search returning every beam, scored by the sum of token log-probabilities
    (length penalty 0), nothing inherited from the model's defaults; greedy for one beam."""
    beams = {"length_penalty": 0.0, "early_stopping": False} if num_beams > 1 else {}
    return GenerationConfig(
        do_sample=False,
        num_beams=num_beams,
        num_return_sequences=num_beams,
        **beams,
        max_new_tokens=max_new_tokens,
        top_k=None,
        top_p=None,
        temperature=None,
        repetition_penalty=None,
        eos_token_id=eos,
        pad_token_id=pad,
        output_scores=True,
        return_dict_in_generate=True,
    )


def restricted_log_probs(
    index: PrefixIndex, logits: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced log-probabilities as ``restricted`` decoding scores them (training that
    must agree with its rollouts): completion ``tokens`` (B, C) under ``logits`` (B, C, V) at
    their positions, each position normalised over ``index.sid_vocab``.

    Returns log-probabilities (B, C) (0 for a token outside ``sid_vocab``: padding after
    end-of-sequence; and 0 for an end-of-sequence that is the only way on, as beam search scores
    it) and the entropies (B, C) of the per-position distributions (0 at those forced ends)."""
    logp = logits.index_select(2, index.sid_vocab).float().log_softmax(-1)  # (B, C, U)
    local = index.to_local[tokens]
    picked = logp.gather(2, local.clamp(min=0)[:, :, None]).squeeze(2)
    entropy = -(logp.exp() * logp).sum(-1)
    # a forced end-of-sequence: the trie node before it allows nothing else
    node = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
    forced = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
    for j in range(tokens.shape[1]):
        forced[:, j] = index.eos_only[node]
        node = index.child(node, tokens[:, j])
    free = (local >= 0) & ~forced
    return torch.where(free, picked, 0.0), torch.where(forced, 0.0, entropy)


def left_pad(prompts: Sequence[Sequence[int]], pad: int, device: torch.device) -> dict:
    """``input_ids`` and ``attention_mask`` (B, P) for token lists, padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        if p:
            ids[row, width - len(p) :] = torch.as_tensor(p)
            mask[row, width - len(p) :] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


@torch.no_grad()
def _is_linear(head: object, weight: object, bias: object) -> bool:
    """Whether the output ``head`` computes ``x @ weight.T + bias`` (checked on a probe, once
    per head module: the probe forms a full row of logits, which a search must not pay for)."""
    if not isinstance(head, torch.nn.Module) or not isinstance(weight, torch.Tensor):
        return False
    if weight.dim() != 2 or not (bias is None or isinstance(bias, torch.Tensor)):
        return False
    if head in _LINEAR_HEADS:
        return True
    gen = torch.Generator(device=weight.device).manual_seed(0)  # leaves the global RNG alone
    probe = torch.randn(2, weight.shape[1], generator=gen, device=weight.device).to(weight.dtype)
    want = torch.nn.functional.linear(probe, weight, bias)
    got = head(probe)
    linear = got.shape == want.shape and torch.allclose(got, want, rtol=1e-3, atol=1e-3)
    if linear:
        _LINEAR_HEADS.add(head)
    return linear


class StepHead:
    """How a decoding step turns the model's last position into log-probabilities of the
    step's columns (:meth:`PrefixIndex.columns`).

    ``full``: the model's own logits over the whole vocabulary, normalised over it (what
    ``generate`` scores). ``restricted``: the decoder's last hidden state times the rows of the
    output embedding of the SID tokens and end-of-sequence only (``index.sid_vocab``: 769 rows
    for 3 x 256 codes, against Qwen2.5's 152k), normalised over them: the output head never
    forms the (beams, vocabulary) logits. The two rank alike when the model puts almost all of
    a SID position's mass on SID tokens, which SFT on SIDs teaches; they are identical when
    every other token's logit is -inf. ``restricted`` needs a plain linear output head (no
    logit soft-capping or scaling).
    """

    def __init__(self, model: PreTrainedModel, index: PrefixIndex, kind: str = "full") -> None:
        if kind not in HEADS:
            raise SidrecError(f"decoding.head must be one of {HEADS}, got {kind!r}")
        self.model, self.index, self.kind = model, index, kind
        if kind == "restricted":
            head, cfg = model.get_output_embeddings(), model.config
            decoder = model.get_decoder()
            scaled = [k for k in SCALED_LOGITS if getattr(cfg, k, None)]
            # the head's weight and bias: a linear layer's, or (a PEFT wrapper that trains a
            # copy of the head) the active copy's
            weight, bias = getattr(head, "weight", None), getattr(head, "bias", None)
            if decoder is model or scaled or not _is_linear(head, weight, bias):
                raise SidrecError(
                    "decoding.head=restricted needs logits = the decoder's last hidden state "
                    f"times a linear output head, which {type(model).__name__} does not have"
                    f"{' (it scales its logits: ' + ', '.join(scaled) + ')' if scaled else ''}: "
                    "use decoding.head=full"
                )
            self.decoder = decoder
            self.weight = weight.index_select(0, index.sid_vocab)  # (U, H)
            self.bias = None if bias is None else bias.index_select(0, index.sid_vocab)

    def forward(self, **inputs: Any) -> tuple[object, torch.Tensor]:
        """Run the model on ``inputs`` (with ``use_cache``); returns the cache and the last
        position's states: logits (B, V) for ``full``, log-probabilities over ``sid_vocab``
        (B, U) for ``restricted``."""
        if self.kind == "full":
            out = self.model(**inputs, use_cache=True, logits_to_keep=1)
            return out.past_key_values, out.logits[:, -1]
        out = self.decoder(**inputs, use_cache=True)
        hidden = out.last_hidden_state[:, -1]
        logits = torch.nn.functional.linear(hidden, self.weight, self.bias).float()
        return out.past_key_values, logits.log_softmax(-1)

    def step(
        self, tokens: torch.Tensor, mask: torch.Tensor, position: torch.Tensor, cache: object
    ) -> torch.Tensor:
        """States (B, D) after feeding one token per row, ``tokens`` (B,), at ``position`` (B,)
        with attention ``mask`` (B, t) over the rows of ``cache``."""
        return self.forward(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=position[:, None],
            past_key_values=cache,
        )[1]

    def log_probs(self, states: torch.Tensor | None, step: int, n: int) -> torch.Tensor:
        """Log-probabilities (n, W) of ``step``'s columns from ``states`` (n, D); zeros where
        the model was not asked (None)."""
        cols = self.index.columns(step)
        if states is None:
            return torch.zeros(n, cols.shape[0], device=cols.device)
        if self.kind == "full":
            logits = states.float()
            return logits.index_select(1, cols) - logits.logsumexp(1, keepdim=True)
        return states.index_select(1, self.index.local_columns(step))


@torch.inference_mode()
def beam_search(
    model: PreTrainedModel,
    index: PrefixIndex,
    prompts: Sequence[Sequence[int]],
    num_beams: int,
    pad_token_id: int,
    head: str = "full",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``num_beams`` catalog SIDs for each prompt under constrained beam search.

    The search ``generate`` does with :class:`SidConstraint` and :func:`beam_config` (length
    penalty 0), written out so that each prompt is run through the model once, not once per
    beam, and the search stops as soon as no running beam can beat the finished ones. At each
    step every beam's allowed continuations are scored; the K best that end a SID join the
    finished list (best K kept), the K best others run on.

    Args:
        model: a causal LM that knows the SID tokens.
        index: the catalog's prefix index, on the model's device.
        prompts: B token-id lists (not padded).
        num_beams: K, at most the number of distinct SIDs.
        pad_token_id: the padding token.
        head: ``full`` or ``restricted`` (see :class:`StepHead`).

    Returns:
        ``sids`` (B, K) SID indices, best first, and their ``scores`` (B, K): the SID's
        log-probability under the model (renormalised per step for ``restricted``).
    """
    n_sids = len(index.catalog.codes)
    if num_beams > n_sids:
        raise SidrecError(f"num_beams={num_beams} exceeds the catalog's {n_sids} distinct SIDs")
    scorer = StepHead(model, index, head)
    batch = left_pad(prompts, pad_token_id, model.device)
    mask = batch["attention_mask"]
    n = mask.shape[0]
    position = (mask.cumsum(1) - 1).clamp(min=0)
    cache, states = scorer.forward(**batch, position_ids=position)  # (N * k, D) or None
    position = position[:, -1]
    dev = mask.device
    node = torch.zeros(n, dtype=torch.long, device=dev)  # (N * k,) one beam per prompt at first
    running = torch.zeros(n, 1, device=dev)  # (N, k) running beams' scores
    done = torch.full((n, num_beams), float("-inf"), device=dev)  # finished beams' scores
    done_sid = torch.full((n, num_beams), -1, dtype=torch.long, device=dev)
    rows = torch.arange(n, device=dev)[:, None]
    for step in range(index.depth + 1):
        k = running.shape[1]
        cols = index.columns(step)
        width = cols.shape[0]
        logp = scorer.log_probs(states, step, node.shape[0])
        total = running.reshape(-1, 1) + index.restrict(logp, node, step)
        total = total.view(n, k, width)
        # the end-of-sequence column ends a SID: merge with the finished ones
        merged = torch.cat([done, total[:, :, -1]], 1)
        sid = torch.cat([done_sid, index.sid_of_node[node].view(n, k)], 1)
        done, best = merged.topk(num_beams, dim=1)
        done_sid = sid.gather(1, best)
        if width == 1:
            break
        codes = total[:, :, :-1].reshape(n, k * (width - 1))
        running, pick = codes.topk(min(num_beams, codes.shape[1]), dim=1)
        # scores only fall: stop when no running beam can enter the finished list
        if not bool((running[:, 0] > done[:, -1]).any()):
            break
        beam = (rows * k + pick // (width - 1)).view(-1)
        tokens = cols[pick % (width - 1)].view(-1)
        node = index.child(node[beam], tokens)
        cache.reorder_cache(beam)
        mask = torch.cat([mask[beam], mask.new_ones(beam.shape[0], 1)], 1)
        position = position[beam] + 1
        if bool(index.eos_only[node].all()):
            # every beam holds a complete SID: the next step only ends them, at no cost
            states = None
            continue
        states = scorer.step(tokens, mask, position, cache)
    if bool((done_sid < 0).any()) or not bool(torch.isfinite(done).all()):
        raise SidrecError("constrained beam search produced a sequence that is not a catalog SID")
    return done_sid, done


@torch.inference_mode()
def constrained_sample(
    model: PreTrainedModel,
    index: PrefixIndex,
    prompts: Sequence[Sequence[int]],
    num_samples: int,
    pad_token_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    head: str = "full",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_samples`` catalog SIDs per prompt, drawn token by token from the model's
    distribution at ``temperature`` renormalised over the allowed tokens (the prefix index's
    masks, as in :func:`beam_search`); the same SID can be drawn more than once.

    Each prompt runs through the model once; its cache is then repeated for the samples.
    ``head``: ``full`` or ``restricted`` (see :class:`StepHead`).

    Returns:
        ``sids`` (B, G) SID indices and ``scores`` (B, G): each sample's log-probability under
        the model (temperature 1), each row sorted best first.
    """
    if temperature <= 0:
        raise SidrecError(f"sampling temperature must be > 0, got {temperature}")
    g = num_samples
    scorer = StepHead(model, index, head)
    batch = left_pad(prompts, pad_token_id, model.device)
    mask = batch["attention_mask"]
    n = mask.shape[0]
    position = (mask.cumsum(1) - 1).clamp(min=0)
    cache, states = scorer.forward(**batch, position_ids=position)
    rep = torch.arange(n, device=mask.device).repeat_interleave(g)
    cache.reorder_cache(rep)
    states = states.index_select(0, rep)  # (N * G, D)
    mask, position = mask[rep], position[rep, -1]
    node = torch.zeros(n * g, dtype=torch.long, device=mask.device)
    score = torch.zeros(n * g, device=mask.device)
    sid = torch.full_like(node, -1)
    for step in range(index.depth + 1):
        cols = index.columns(step)
        logp = index.restrict(scorer.log_probs(states, step, node.shape[0]), node, step)
        noise = torch.rand(logp.shape, device=logp.device, generator=generator)
        # Gumbel-max over the allowed columns draws from softmax(logp / temperature)
        gumbel = -torch.log(-torch.log(noise.clamp_(1e-20, 1.0 - 1e-7)))
        pick = (logp / temperature + gumbel).argmax(1)
        score += torch.where(sid < 0, logp.gather(1, pick[:, None]).squeeze(1), 0.0)
        tokens = cols[pick]
        ending = (sid < 0) & (tokens == index.eos_token_id)
        sid = torch.where(ending, index.sid_of_node[node], sid)
        node = index.child(node, tokens)
        if bool((sid >= 0).all()):
            break
        mask = torch.cat([mask, mask.new_ones(n * g, 1)], 1)
        position = position + 1
        if bool(index.eos_only[node].all()):
            states = None  # every sample holds a complete SID: the next step only ends it
            continue
        states = scorer.step(tokens, mask, position, cache)
    if bool((sid < 0).any()):
        raise SidrecError("constrained sampling produced a sequence that is not a catalog SID")
    score, order = score.view(n, g).sort(1, descending=True)
    return sid.view(n, g).gather(1, order), score


def auto_batch_size(
    model: PreTrainedModel,
    index: PrefixIndex,
    prompts: Sequence[Sequence[int]],
    num_beams: int,
    pad_token_id: int,
    head: str = "full",
    seconds: float = 10.0,
) -> int:
    """``batch_size: auto``: the largest batch, doubling from 1 up to :data:`AUTO_BATCH_CAP`
    (and the number of prompts), in which the longest ``prompts`` decode with ``num_beams``
    beams: on a GPU, without running out of its memory; on a CPU, within ``seconds`` a batch
    (larger batches only pay while a batch stays short). 1 when even that does not fit."""
    longest = sorted(prompts, key=len, reverse=True)
    limit = min(len(longest), AUTO_BATCH_CAP)
    best, size = 1, 1
    while True:
        started = time.perf_counter()
        try:
            beam_search(model, index, longest[:size], num_beams, pad_token_id, head)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            return best
        if model.device.type == "cpu" and time.perf_counter() - started > seconds:
            return best
        best = size
        if size >= limit:
            return best
        size = min(size * 2, limit)


def check_batch_size(setting: object, key: str = "evaluate.batch_size") -> None:
    """Refuse a batch-size setting that is neither a number >= 1 nor ``auto``."""
    if setting == "auto":
        return
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise SidrecError(f"{key} must be a number >= 1 or auto, got {setting!r}")
