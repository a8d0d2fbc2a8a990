"""The ``tree`` model family: an item-level encoder whose head is the catalog's SID trie.

Each history item enters a SASRec-style causal transformer once, as its item-id embedding plus
the embeddings of its SID codes. At every position the head gives the next item's SID code by
code: at level ``l`` the next code among the children of the prefix so far, with logits
``h . (W_l[code] + N_l[node]) + b_l[node]`` normalised over the siblings. So ``p(SID | history)``
is the product over levels and sums to one over the catalog, and every SID is scored exactly
(one log-softmax per level and a gather): no beam search, no invalid SID, the history masked in
one line. ``sidrec sft`` trains it (``model.family: tree``); ``evaluate``, ``recommend``,
``serve`` and ``update`` load it from its model directory (``tree.pt`` + ``tree.json`` + the
bundled SIDs). A catalog grown from the model's SIDs keeps every trained node; a new item's
new nodes start at zero (its codes' embeddings carry it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sidrec.core.errors import InputError
from sidrec.core.io import read_json
from sidrec.core.model_dir import model_sids
from sidrec.core.sasrec_model import SASRec, _init, pad_left
from sidrec.core.sids import SidTable

TREE_FILE = "tree.pt"
TREE_CONFIG = "tree.json"
# the ``tree`` settings that shape the network (recorded in tree.json)
SHAPE_KEYS = ("hidden", "layers", "heads", "dropout", "position", "max_len", "node_embeddings")


class Trie:
    """The trie of a SID table. SIDs shorter than the deepest are padded with an end code (the
    level's codebook size), so every SID has ``levels`` nodes. Per level: every node's
    ``parent`` and ``code`` (int64 [n_l]), ``kids`` (each parent's children, int64
    [n_parents, widest], -1 padding) and ``slot`` (a node's place among its siblings);
    ``node`` (int64 [n_sids, levels]) is each distinct SID's node per level, ``sid_of_item``
    (int64 [n_items]) each item's SID and ``representative`` (bool [n_items]) the first item
    of each SID, the one a shared SID is shown as."""

    def __init__(self, table: SidTable) -> None:
        self.levels = max(len(c) for c in table.codes)
        known = list(table.codebook_sizes)
        sizes = [
            max(
                [known[lv] if lv < len(known) else 0]
                + [c[lv] + 1 for c in table.codes if len(c) > lv]
            )
            for lv in range(self.levels)
        ]
        padded = [tuple(c) + tuple(sizes[len(c) : self.levels]) for c in table.codes]
        sids, self.sid_of_item = np.unique(np.array(padded), axis=0, return_inverse=True)
        self.sid_of_item = self.sid_of_item.reshape(-1).astype(np.int64)
        first = np.full(len(sids), len(padded))
        np.minimum.at(first, self.sid_of_item, np.arange(len(padded)))
        self.representative = np.zeros(len(padded), bool)
        self.representative[first] = True
        self.codebook_sizes = [int(sizes[lv]) + 1 for lv in range(self.levels)]  # + end code
        self.parent, self.code, self.kids, self.slot = [], [], [], []
        self.node = np.zeros((len(sids), self.levels), np.int64)
        prev = np.zeros(len(sids), np.int64)
        for lv in range(self.levels):
            keys = np.stack([prev, sids[:, lv]], axis=1)
            uniq, inverse = np.unique(keys, axis=0, return_inverse=True)  # sorted by parent
            parent = uniq[:, 0]
            self.parent.append(parent)
            self.code.append(uniq[:, 1])
            self.node[:, lv] = prev = inverse.reshape(-1)
            n_par = int(parent.max()) + 1
            start = np.searchsorted(parent, np.arange(n_par))
            slot = np.arange(len(parent)) - start[parent]
            kids = np.full((n_par, int(slot.max()) + 1), -1, np.int64)
            kids[parent, slot] = np.arange(len(parent))
            self.kids.append(kids)
            self.slot.append(slot)
        self.sids = sids

    def node_keys(self, lv: int) -> dict[tuple[int, ...], int]:
        """Each node of level ``lv`` by its code prefix."""
        return {
            tuple(s[: lv + 1].tolist()): int(n)
            for s, n in zip(self.sids, self.node[:, lv], strict=True)
        }


class TreeSID(nn.Module):
    """SASRec's encoder over item-id + SID-code input embeddings, and the trie softmax head.
    ``s`` holds the :data:`SHAPE_KEYS` of a ``tree`` config section."""

    def __init__(self, n_items: int, trie: Trie, s: dict[str, Any]) -> None:
        super().__init__()
        self.shape = {k: s[k] for k in SHAPE_KEYS}
        h = s["hidden"]
        self.encoder = SASRec(
            n_items, h, s["layers"], s["heads"], s["dropout"], s["max_len"], position=s["position"]
        )
        self.trie, self.levels, self.node_emb = trie, trie.levels, bool(s["node_embeddings"])
        sizes = trie.codebook_sizes
        self.code_in = nn.ModuleList(nn.Embedding(k + 1, h, padding_idx=0) for k in sizes)
        self.code_out = nn.ModuleList(nn.Embedding(k, h) for k in sizes)
        self.node_out = nn.ModuleList(nn.Embedding(len(p), h) for p in trie.parent)
        self.node_bias = nn.ParameterList(nn.Parameter(torch.zeros(len(p))) for p in trie.parent)
        for m in (*self.code_in, *self.code_out, *self.node_out):
            _init(m)
        codes = np.zeros((n_items + 1, self.levels), np.int64)  # token -> codes + 1, 0 = pad
        codes[1:] = trie.sids[trie.sid_of_item] + 1
        self._buffer("item_codes", codes)
        self._buffer("sid_node", trie.node)
        self._buffer("sid_of_item", trie.sid_of_item)
        self._buffer("representative", trie.representative)
        for lv in range(self.levels):
            self._buffer(f"parent{lv}", trie.parent[lv])
            self._buffer(f"code{lv}", trie.code[lv])
            self._buffer(f"kids{lv}", trie.kids[lv])
            self._buffer(f"slot{lv}", trie.slot[lv])

    def _buffer(self, name: str, value: np.ndarray) -> None:
        self.register_buffer(name, torch.as_tensor(value), persistent=False)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, H) of left-padded item-token sequences (B, T)."""
        codes = self.item_codes[seq]  # (B, T, levels), 0 = padding
        extra = sum(emb(codes[..., lv]) for lv, emb in enumerate(self.code_in))
        return self.encoder(seq, self.encoder.item(seq) + extra)

    def node_vectors(self, lv: int) -> torch.Tensor:
        """The output vector of every node of level ``lv``: (n_l, H)."""
        w = self.code_out[lv].weight[getattr(self, f"code{lv}")]
        return w + self.node_out[lv].weight if self.node_emb else w

    def sibling_logits(self, h: torch.Tensor, lv: int, parents: torch.Tensor) -> torch.Tensor:
        """Logits (N, widest) of the children of ``parents`` (N,) at level ``lv`` >= 1 for
        hidden states ``h`` (N, H); -inf where a parent has fewer children."""
        sib = getattr(self, f"kids{lv}")[parents]  # (N, F)
        safe = sib.clamp(min=0)
        logits = (self.node_vectors(lv)[safe] @ h[:, :, None]).squeeze(-1)
        return (logits + self.node_bias[lv][safe]).masked_fill(sib < 0, float("-inf"))

    def loss(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Mean -log p(SID of ``items`` (N,) | ``h`` (N, H)), each level a softmax over the
        target's siblings only."""
        nodes = self.sid_node[self.sid_of_item[items]]  # (N, levels)
        logits = h @ self.node_vectors(0).T + self.node_bias[0]
        loss = nn.functional.cross_entropy(logits, nodes[:, 0])
        for lv in range(1, self.levels):
            logits = self.sibling_logits(h, lv, nodes[:, lv - 1])
            loss = loss + nn.functional.cross_entropy(
                logits, getattr(self, f"slot{lv}")[nodes[:, lv]]
            )
        return loss

    def distill_loss(
        self, h: torch.Tensor, teacher: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """Cross-entropy to a teacher's item distribution ``teacher`` (N, n_items) where the
        tree is least sure: its mass per first-level node against p(first code | h), and its
        mass per second-level node among the target ``items``' siblings."""
        first = self.sid_node[self.sid_of_item]  # (n_items, levels)
        q0 = h.new_zeros(h.shape[0], len(self.node_bias[0])).index_add_(1, first[:, 0], teacher)
        logp0 = (h @ self.node_vectors(0).T + self.node_bias[0]).log_softmax(-1)
        loss = -(q0 * logp0).sum(1).mean()
        if self.levels < 2:
            return loss
        q1 = h.new_zeros(h.shape[0], len(self.node_bias[1])).index_add_(1, first[:, 1], teacher)
        parents = self.sid_node[self.sid_of_item[items], 0]
        sib = self.kids1[parents]
        q = q1.gather(1, sib.clamp(min=0)).masked_fill(sib < 0, 0.0)
        q = q / q.sum(1, keepdim=True).clamp(min=1e-12)
        logp1 = self.sibling_logits(h, 1, parents).log_softmax(-1).masked_fill(sib < 0, 0.0)
        return loss - (q * logp1).sum(1).mean()

    def level_logp(self, h: torch.Tensor, lv: int) -> torch.Tensor:
        """log p(node | its parent, h) of every node of level ``lv``: (N, n_l)."""
        parent = getattr(self, f"parent{lv}")
        logits = h @ self.node_vectors(lv).T + self.node_bias[lv]  # (N, n_l)
        idx = parent[None].expand_as(logits)
        n_par = int(parent[-1]) + 1
        top = logits.new_full((h.shape[0], n_par), -torch.inf)
        top = top.scatter_reduce(1, idx, logits.detach(), "amax")
        shifted = logits - top.gather(1, idx)
        total = logits.new_zeros(h.shape[0], n_par).scatter_add(1, idx, shifted.exp())
        return shifted - total.log().gather(1, idx)

    def item_scores(self, h: torch.Tensor) -> torch.Tensor:
        """log p(item's SID | h) of every item (N, n_items) for hidden states (N, H); -inf for
        an item that shares its SID with an earlier item (the SID is shown as the first)."""
        logp = sum(self.level_logp(h, lv)[:, self.sid_node[:, lv]] for lv in range(self.levels))
        scores = logp[:, self.sid_of_item]
        return scores.masked_fill(~self.representative, float("-inf"))


@torch.no_grad()
def rank_tree(
    model: TreeSID,
    histories: list[list[int]],
    k: int,
    batch: int,
    exclude_history: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` items (N, k) and their SID log-probabilities (N, k) after each history, the
    whole catalog scored exactly (without the history's own items when ``exclude_history``),
    and the top-``k`` items of the same scores before the history was left out (N, k)."""
    model.eval()
    dev = model.item_codes.device
    max_len = model.encoder.max_len
    k = min(k, int(model.representative.sum()))
    items, scores, unfiltered = [], [], []
    for b in range(0, len(histories), batch):
        hists = histories[b : b + batch]
        seq = pad_left([[i + 1 for i in h[-max_len:]] for h in hists], max_len).to(dev)
        s = model.item_scores(model.encode(seq)[:, -1])
        unfiltered.append(s.topk(k, dim=1).indices.cpu().numpy())
        if exclude_history:
            rows = [r for r, h in enumerate(hists) for _ in h]
            s[rows, [i for h in hists for i in h]] = float("-inf")
        top = s.topk(k, dim=1)
        items.append(top.indices.cpu().numpy())
        scores.append(top.values.float().cpu().numpy())
    return np.concatenate(items), np.concatenate(scores), np.concatenate(unfiltered)


def is_tree_model(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` holds a ``tree`` family model."""
    return (Path(model_dir) / TREE_CONFIG).is_file()


def grown_state(
    state: dict[str, torch.Tensor], old: Trie, new: TreeSID, n_old_items: int
) -> dict[str, torch.Tensor]:
    """Weights trained on ``old``'s catalog for the model ``new`` over a catalog grown from it:
    every old item and node keeps its rows, new ones keep ``new``'s (zero) rows."""
    out = {k: v.clone() for k, v in new.state_dict().items()}
    for key, value in state.items():
        if key.startswith(("node_out.", "node_bias.")):
            continue
        if key == "encoder.item.weight":
            out[key][: n_old_items + 1] = value
            out[key][n_old_items + 1 :] = 0.0
        else:
            out[key] = value
    for lv in range(old.levels):
        old_keys = old.node_keys(lv)
        pairs = [(n, old_keys[p]) for p, n in new.trie.node_keys(lv).items() if p in old_keys]
        to, src = (torch.as_tensor(x) for x in zip(*pairs, strict=True))
        weight, bias = out[f"node_out.{lv}.weight"], out[f"node_bias.{lv}"]
        weight.zero_()
        bias.zero_()
        weight[to] = state[f"node_out.{lv}.weight"][src]
        bias[to] = state[f"node_bias.{lv}"][src]
    return out


def load_tree(
    model_dir: str | Path, table: SidTable | None = None, device: str | torch.device = "cpu"
) -> TreeSID:
    """The tree model in ``model_dir`` in eval mode on ``device``, over ``table`` (its bundled
    SIDs by default, or a catalog grown from them: see :func:`grown_state`)."""
    model_dir = Path(model_dir)
    shape = read_json(model_dir / TREE_CONFIG)
    own, _ = model_sids(model_dir)
    table = own if table is None else table
    old = Trie(own)
    new = Trie(table)
    if new.levels != old.levels:
        raise InputError(
            model_dir, f"was trained on SIDs of {old.levels} levels, the catalog has {new.levels}"
        )
    state = torch.load(model_dir / TREE_FILE, map_location="cpu", weights_only=True)
    model = TreeSID(len(table.codes), new, shape)
    if len(table.codes) == len(own.codes):
        model.load_state_dict(state)
    else:
        model.load_state_dict(grown_state(state, old, model, len(own.codes)))
    return model.to(device).eval()
