"""The SASRec model (Kang & McAuley, 2018) and the reading of a trained one: shared by
``sidrec baseline sasrec``, which trains it, and ``sidrec rl``'s ``sasrec`` reward, which
scores beams with it from the baseline's output directory (``model.pt`` + ``config.yaml``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from sidrec.errors import InputError
from sidrec.io import is_complete
from sidrec.manifest import CONFIG_FILE

MODEL_FILE = "model.pt"


def _init(module: nn.Module) -> None:
    """Weights ~ N(0, 0.02), biases 0 (BERT's and RecBole's initialisation): item scores start
    near 0, so the first loss is ln(n_items), not the ~30 of unit-variance embeddings."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        nn.init.zeros_(module.weight[module.padding_idx])


class SASRec(nn.Module):
    """Item embeddings (shared with the output layer), learned positions and pre-norm
    transformer blocks under a causal mask; item ``i`` is token ``i + 1``, 0 is padding.

    Positions count back from the end of the (left-padded) window, as if every sequence were
    padded to ``max_len``: a history gets the same positions whatever its batch's width."""

    def __init__(
        self, n_items: int, hidden: int, layers: int, heads: int, dropout: float, max_len: int
    ) -> None:
        super().__init__()
        self.item = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.position = nn.Embedding(max_len, hidden)
        self.dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(
            hidden, heads, 4 * hidden, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.heads = heads
        self.apply(_init)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, H) of left-padded token sequences ``seq`` (B, L)."""
        b, length = seq.shape
        x = self.item(seq)
        n = self.position.num_embeddings
        x = self.dropout(x + self.position(torch.arange(n - length, n, device=seq.device)))
        # causal, padding keys hidden; every position sees itself (no all-masked row)
        future = torch.ones(length, length, dtype=torch.bool, device=seq.device).triu(1)
        blocked = future | (seq == 0)[:, None, :]
        blocked &= ~torch.eye(length, dtype=torch.bool, device=seq.device)
        mask = blocked.repeat_interleave(self.heads, 0)
        return self.norm(self.blocks(x, mask=mask))

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


def load_sasrec(path: str | Path, n_items: int) -> tuple[SASRec, int]:
    """The trained SASRec in ``path`` (an output of ``sidrec baseline sasrec``) for a catalog
    of ``n_items`` items, in eval mode on the CPU, and the history length it reads."""
    path = Path(path)
    if not is_complete(path) or not (path / MODEL_FILE).is_file():
        raise InputError(
            path, f"is not a finished `sidrec baseline sasrec` output (no {MODEL_FILE})"
        )
    s = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8"))["sasrec"]
    state = torch.load(path / MODEL_FILE, map_location="cpu", weights_only=True)
    found = state["item.weight"].shape[0] - 1
    if found != n_items:
        raise InputError(path, f"scores {found} items, the dataset has {n_items}")
    model = SASRec(n_items, s["hidden"], s["layers"], s["heads"], s["dropout"], s["max_len"])
    model.load_state_dict(state)
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
