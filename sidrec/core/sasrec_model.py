"""The SASRec model (Kang & McAuley, 2018) and the reading of a trained one: shared by
``sidrec baseline sasrec``, which trains it, and ``sidrec rl``'s ``sasrec`` reward, which
scores beams with it from the baseline's output directory (``model.pt`` + ``config.yaml``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from sidrec.core.config import defaults
from sidrec.core.errors import InputError, SidrecError
from sidrec.core.io import is_complete
from sidrec.core.manifest import CONFIG_FILE
from sidrec.core.sequences import sequence_windows

MODEL_FILE = "model.pt"


NORMS = {"layer": nn.LayerNorm, "rms": nn.RMSNorm}
POSITIONS = ("learned", "rope")
MLPS = ("plain", "gated")


def _init(module: nn.Module) -> None:
    """Weights ~ N(0, 0.02), biases 0 (BERT's and RecBole's initialisation): item scores start
    near 0, so the first loss is ln(n_items), not the ~30 of unit-variance embeddings."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        nn.init.zeros_(module.weight[module.padding_idx])


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of queries or keys x (B, heads, L, d) by angles (L, d)."""
    half = x.shape[-1] // 2
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + turned * sin


class MLP(nn.Module):
    """The block's feed-forward: ``plain`` (GELU, 4 x hidden) or ``gated`` (SwiGLU, about
    8/3 x hidden, so both have about the same parameters)."""

    def __init__(self, hidden: int, kind: str, dropout: float) -> None:
        super().__init__()
        self.gated = kind == "gated"
        width = 4 * hidden if not self.gated else max(1, round(8 * hidden / 3))
        self.up = nn.Linear(hidden, width)
        self.gate = nn.Linear(hidden, width) if self.gated else None
        self.down = nn.Linear(width, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., H)."""
        if self.gate is not None:
            h = nn.functional.silu(self.gate(x)) * self.up(x)
        else:
            h = nn.functional.gelu(self.up(x))
        return self.down(self.dropout(h))


class Experts(nn.Module):
    """A mixture of ``n`` MLP experts: each token goes to its ``top_k`` experts by the router's
    softmax, weighted by those probabilities renormalised. ``forward`` also returns the
    load-balancing loss (Switch Transformer): n x sum over experts of (share of routed
    tokens) x (mean router probability), 1 when balanced."""

    def __init__(self, hidden: int, kind: str, dropout: float, n: int, top_k: int) -> None:
        super().__init__()
        self.router = nn.Linear(hidden, n, bias=False)
        self.experts = nn.ModuleList(MLP(hidden, kind, dropout) for _ in range(n))
        self.top_k = top_k

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, H) and the real (not padding) positions keep (B, L) -> (B, L, H), loss."""
        probs = self.router(x).softmax(-1)  # (B, L, n)
        weight, chosen = probs.topk(self.top_k, dim=-1)  # (B, L, k)
        weight = weight / weight.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows, cols, slot = (chosen == e).nonzero(as_tuple=True)
            if rows.numel():
                out[rows, cols] += weight[rows, cols, slot, None] * expert(x[rows, cols])
        real = keep.reshape(-1)
        n = len(self.experts)
        routed = nn.functional.one_hot(chosen, n).sum(-2).reshape(-1, n)[real].float()
        share = routed.sum(0) / routed.sum().clamp(min=1)
        loss = n * (share * probs.reshape(-1, n)[real].mean(0)).sum()
        return out, loss


class Block(nn.Module):
    """A pre-norm transformer block: causal self-attention (rotary positions with ``rope``),
    then the MLP or the experts, each added back through dropout."""

    def __init__(
        self, hidden: int, heads: int, dropout: float, norm: str, mlp: str, experts: int, top_k: int
    ) -> None:
        super().__init__()
        self.norm1, self.norm2 = NORMS[norm](hidden), NORMS[norm](hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ffn = (
            Experts(hidden, mlp, dropout, experts, top_k) if experts else MLP(hidden, mlp, dropout)
        )
        self.dropout = nn.Dropout(dropout)
        self.heads, self.p = heads, dropout

    def forward(
        self,
        x: torch.Tensor,
        allowed: torch.Tensor,
        keep: torch.Tensor,
        angles: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, H), allowed (B, 1, L, L) which keys each query sees, keep (B, L) the real
        positions, angles (cos, sin) each (L, d) or None -> (B, L, H), the experts' loss."""
        b, length, h = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        if angles is not None:
            q, k = rotate(q, *angles), rotate(k, *angles)
        p = self.p if self.training else 0.0
        a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        x = x + self.dropout(self.out(a.transpose(1, 2).reshape(b, length, h)))
        if isinstance(self.ffn, Experts):
            y, loss = self.ffn(self.norm2(x), keep)
        else:
            y, loss = self.ffn(self.norm2(x)), x.new_zeros(())
        return x + self.dropout(y), loss


class SASRec(nn.Module):
    """Item embeddings (shared with the output layer), positions and pre-norm transformer
    blocks under a causal mask; item ``i`` is token ``i + 1``, 0 is padding.

    Positions count back from the end of the (left-padded) window, as if every sequence were
    padded to ``max_len``: a history gets the same positions whatever its batch's width.

    Variants (``sasrec.*``): ``norm`` layer | rms, ``position`` learned (added to the input) |
    rope (rotary, on queries and keys), ``mlp`` plain | gated (SwiGLU), ``moe_experts`` 0 | N
    (a mixture of N MLPs, ``moe_top_k`` per token; after a forward, ``aux_loss`` holds the
    blocks' load-balancing loss)."""

    def __init__(
        self,
        n_items: int,
        hidden: int,
        layers: int,
        heads: int,
        dropout: float,
        max_len: int,
        norm: str = "layer",
        position: str = "learned",
        mlp: str = "plain",
        moe_experts: int = 0,
        moe_top_k: int = 2,
    ) -> None:
        super().__init__()
        if norm not in NORMS or position not in POSITIONS or mlp not in MLPS:
            raise SidrecError(
                f"sasrec.norm must be one of {list(NORMS)}, sasrec.position one of {POSITIONS} "
                f"and sasrec.mlp one of {MLPS}; got {norm!r}, {position!r}, {mlp!r}"
            )
        if hidden % heads or (position == "rope" and (hidden // heads) % 2):
            raise SidrecError(
                f"sasrec.hidden={hidden} must split into sasrec.heads={heads} heads (of an even "
                "size for rope)"
            )
        if moe_experts < 0 or (moe_experts and not 1 <= moe_top_k <= moe_experts):
            raise SidrecError(
                f"sasrec.moe_experts must be >= 0 and sasrec.moe_top_k in 1..moe_experts; got "
                f"{moe_experts} and {moe_top_k}"
            )
        self.item = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.position = nn.Embedding(max_len, hidden) if position == "learned" else None
        self.max_len = max_len
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(hidden, heads, dropout, norm, mlp, moe_experts, moe_top_k) for _ in range(layers)
        )
        self.norm = NORMS[norm](hidden)
        self.heads = heads
        self.aux_loss = torch.zeros(())
        d = hidden // heads
        self.register_buffer(
            "inv_freq", 1.0 / 10000 ** (torch.arange(0, d, 2).float() / d), persistent=False
        )
        self.apply(_init)

    @classmethod
    def from_config(cls, n_items: int, s: dict[str, Any]) -> SASRec:
        """The model a ``sasrec`` config section describes."""
        return cls(
            n_items,
            s["hidden"],
            s["layers"],
            s["heads"],
            s["dropout"],
            s["max_len"],
            s["norm"],
            s["position"],
            s["mlp"],
            s["moe_experts"],
            s["moe_top_k"],
        )

    def forward(self, seq: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, L, H) of left-padded token sequences ``seq`` (B, L); ``inputs``
        (B, L, H) replaces the item embeddings of ``seq`` (padding is still read from ``seq``)."""
        b, length = seq.shape
        n = self.max_len
        at = torch.arange(n - length, n, device=seq.device)
        x = self.item(seq) if inputs is None else inputs
        angles = None
        if self.position is not None:
            x = x + self.position(at)
        else:
            freqs = at[:, None].float() * self.inv_freq[None]  # (L, d/2)
            angles = (freqs.cos().repeat(1, 2), freqs.sin().repeat(1, 2))
        x = self.dropout(x)
        # causal, padding keys hidden; every position sees itself (no all-masked row)
        eye = torch.eye(length, dtype=torch.bool, device=seq.device)
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        keep = seq != 0
        allowed = ((causal & keep[:, None, :]) | eye)[:, None]
        self.aux_loss = x.new_zeros(())
        for block in self.blocks:
            x, loss = block(x, allowed, keep, angles)
            self.aux_loss = self.aux_loss + loss
        return self.norm(x)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores (N, n_items) of every item for hidden states (N, H)."""
        return hidden @ self.item.weight[1:].T


def pad_left(rows: list[list[int]], width: int) -> torch.Tensor:
    """Token rows (N, width), each row's last ``width`` tokens right-aligned, 0-padded."""
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for r, row in enumerate(rows):
        if row:
            out[r, width - len(row) :] = torch.as_tensor(row[-width:])
    return out


def item_windows(seqs: list[list[int]], max_len: int) -> list[tuple[list[int], list[int]]]:
    """(inputs, targets) per training window of every sequence: items as tokens (item + 1),
    targets as item ids, -100 where a target has no loss (covered by an earlier window)."""
    out = []
    for seq in seqs:
        for start, first, end in sequence_windows(len(seq), max_len + 1):
            inputs = [i + 1 for i in seq[start : end - 1]]
            targets = [seq[j] if j >= first else -100 for j in range(start + 1, end)]
            out.append((inputs, targets))
    return out


def length_grouped_batches(
    windows: list[tuple[list[int], list[int]]], size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffled batches of windows of similar length (little padding): a random order cut into
    groups of 50 batches, each sorted by length, and the batches shuffled."""
    order = rng.permutation(len(windows))
    lengths = np.array([len(windows[i][0]) for i in order])
    batches = []
    for g in range(0, len(order), 50 * size):
        group = order[g : g + 50 * size][np.argsort(-lengths[g : g + 50 * size], kind="stable")]
        batches += [group[b : b + size] for b in range(0, len(group), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def window_batches(
    windows: list[tuple[list[int], list[int]]],
    size: int,
    rng: np.random.Generator,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of :func:`item_windows` as left-padded batches: token rows (B, T) and targets
    (B, T) (-100 = no loss), on ``device``."""
    for batch in length_grouped_batches(windows, size, rng):
        part = [windows[i] for i in batch]
        width = max(len(x) for x, _ in part)
        seq = pad_left([x for x, _ in part], width)
        target = torch.full((len(part), width), -100, dtype=torch.long)
        for r, (_, t) in enumerate(part):
            target[r, width - len(t) :] = torch.as_tensor(t)
        yield seq.to(device), target.to(device)


def load_sasrec(path: str | Path, n_items: int) -> tuple[SASRec, int]:
    """The trained SASRec in ``path`` (an output of ``sidrec baseline sasrec``) for a catalog
    of ``n_items`` items, in eval mode on the CPU, and the history length it reads."""
    path = Path(path)
    if not is_complete(path) or not (path / MODEL_FILE).is_file():
        raise InputError(
            path, f"is not a finished `sidrec baseline sasrec` output (no {MODEL_FILE})"
        )
    recorded = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8"))["sasrec"]
    s = {**defaults()["sasrec"], **recorded}  # settings added since then at their defaults
    state = torch.load(path / MODEL_FILE, map_location="cpu", weights_only=True)
    found = state["item.weight"].shape[0] - 1
    if found != n_items:
        raise InputError(path, f"scores {found} items, the dataset has {n_items}")
    model = SASRec.from_config(n_items, s)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise InputError(
            path, "holds weights of another SASRec layout (an older sidrec?); train it again"
        ) from None
    return model.eval(), s["max_len"]


@torch.no_grad()
def score_items(
    model: SASRec, histories: list[list[int]], items: np.ndarray, max_len: int
) -> np.ndarray:
    """Scores (N, G) of ``items`` (N, G) after each of the N histories."""
    dev = next(model.parameters()).device
    part = [[i + 1 for i in h[-max_len:]] for h in histories]
    hidden = model(pad_left(part, max_len).to(dev))[:, -1]  # (N, H)
    vectors = model.item.weight[torch.as_tensor(items, device=dev) + 1]  # (N, G, H)
    return torch.einsum("ngh,nh->ng", vectors, hidden).float().cpu().numpy()
