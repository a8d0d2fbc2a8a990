"""What a SID directory's quantizer means, applied: the residual codebooks (``codebooks.npz``),
the trained encoder of the neural methods (``quantizer.pt``), nearest and Sinkhorn-balanced
code assignment, and :class:`FrozenQuantizer`, which codes new items without moving an
existing SID (``sid assign``, ``serve`` and ``update`` share it)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from sidrec.core.errors import InputError, require_file

CODEBOOKS_FILE = "codebooks.npz"

MODEL_FILE = "quantizer.pt"


class Method(str, Enum):
    RQKMEANS = "rqkmeans"
    CONSTRAINED = "rqkmeans-constrained"
    PLUS = "rqkmeans-plus"
    RQVAE = "rqvae"


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (squared L2) for each row of x [N, D]; centroids [K, D]."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, idx = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return idx[:, 0].astype(np.int64)


def sinkhorn_potentials(
    dist: np.ndarray, epsilon: float = 0.05, iters: int = 50
) -> tuple[np.ndarray, float]:
    """The column potentials of entropic optimal transport from N points to K equal clusters.

    Args:
        dist: float [N, K] squared distances.
        epsilon: entropy weight, relative to the spread of the distances (smaller = harder).
        iters: Sinkhorn iterations.

    Returns:
        ``log_v`` float [K] and the temperature ``epsilon * std(dist)``: a point's cluster is
        the argmin over K of ``dist - temperature * log_v`` (:func:`balanced_labels`).
    """
    n, k = dist.shape
    temperature = epsilon * (float(dist.std()) or 1.0)
    log_kernel = (-dist / temperature).astype(np.float32)
    log_u, log_v = np.zeros(n, dtype=np.float32), np.zeros(k, dtype=np.float32)
    log_col = np.float32(np.log(n / k))
    for _ in range(iters):
        log_u = -_logsumexp(log_kernel + log_v[None, :], axis=1)
        log_v = log_col - _logsumexp(log_kernel + log_u[:, None], axis=0)
    return log_v.astype(np.float64), temperature


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    """log(sum(exp(a))) along ``axis``, in ``a``'s precision (scipy's works in float64)."""
    top = a.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def sinkhorn_assign(dist: np.ndarray, epsilon: float = 0.05, iters: int = 50) -> np.ndarray:
    """Assign N points to K clusters with near-equal sizes: int64 [N], the argmax of the
    transport plan whose column sums are N/K each (``dist``: float [N, K] squared distances)."""
    log_v, temperature = sinkhorn_potentials(dist, epsilon, iters)
    return np.argmin(dist - temperature * log_v[None, :], axis=1).astype(np.int64)


def encode(x: np.ndarray, codebooks: np.ndarray, balance_last: bool = False) -> np.ndarray:
    """Codes [N, L] of x [N, D] under frozen codebooks [L, K, D] (nearest centroid per level;
    with ``balance_last``, Sinkhorn-balanced assignment in the last level)."""
    residual = x.astype(np.float32, copy=True)
    levels = codebooks.shape[0]
    codes = np.empty((x.shape[0], levels), dtype=np.int64)
    for level, centroids in enumerate(codebooks):
        if balance_last and level == levels - 1:
            dist = ((residual[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
            codes[:, level] = sinkhorn_assign(dist)
        else:
            codes[:, level] = nearest(residual, centroids)
        residual -= centroids[codes[:, level]]
    return codes


class Arch(NamedTuple):
    """What is needed to rebuild a trained quantizer."""

    method: str
    in_dim: int
    hidden_dim: int
    latent_dim: int
    levels: int
    codebook_size: int


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    """``x + MLP(x)`` with the MLP's last layer at zero, so it starts as the identity."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = _mlp([dim, hidden, dim])
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


class RQModel(nn.Module):
    """Encoder -> residual quantization -> decoder."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.arch = arch
        if arch.method == Method.PLUS.value:
            self.encoder: nn.Module = _Residual(arch.in_dim, arch.hidden_dim)
            self.decoder: nn.Module = _Residual(arch.in_dim, arch.hidden_dim)
        else:
            self.encoder = _mlp([arch.in_dim, arch.hidden_dim, arch.latent_dim])
            self.decoder = _mlp([arch.latent_dim, arch.hidden_dim, arch.in_dim])
        self.codebooks = nn.Parameter(torch.zeros(arch.levels, arch.codebook_size, arch.latent_dim))

    def quantize(
        self, z: torch.Tensor, beta: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize latents z [B, d] level by level.

        Returns:
            straight-through quantized z [B, d], codes [B, L], codebook + beta * commitment loss.
        """
        residual, total = z, torch.zeros_like(z)
        loss = z.new_zeros(())
        codes = []
        for book in self.codebooks:
            idx = torch.cdist(residual.detach(), book.detach()).argmin(dim=1)
            chosen = book[idx]
            loss = loss + ((chosen - residual.detach()) ** 2).mean()
            loss = loss + beta * ((residual - chosen.detach()) ** 2).mean()
            total = total + chosen
            residual = residual - chosen.detach()
            codes.append(idx)
        return z + (total - z).detach(), torch.stack(codes, dim=1), loss


@torch.inference_mode()
def latents(model: RQModel, x: np.ndarray) -> np.ndarray:
    """The encoder's output for x [N, D] -> float32 [N, d]."""
    return model.encoder(torch.from_numpy(x)).numpy().astype(np.float32)


def save_model(model: RQModel, path: Path) -> None:
    torch.save({"arch": model.arch._asdict(), "state": model.state_dict()}, path)


def load_model(path: Path) -> RQModel:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = RQModel(Arch(**blob["arch"]))
    model.load_state_dict(blob["state"])
    return model.eval()


def residual_before_last(z: np.ndarray, codes: np.ndarray, books: np.ndarray) -> np.ndarray:
    last = books.shape[0] - 1
    return z - sum((books[lv][codes[:, lv]] for lv in range(last)), np.zeros_like(z))


class FrozenQuantizer:
    """The quantizer a SID directory was built with (its codebooks, and for the neural methods
    its encoder), frozen: codes for new items' embeddings, existing SIDs untouched."""

    def __init__(self, sid: str | Path) -> None:
        self.sid = require_file(sid, "SID directory")
        saved = np.load(require_file(self.sid / CODEBOOKS_FILE, "codebooks (built by sid build?)"))
        self.books, self.method = saved["codebooks"], str(saved["method"])
        model_file = self.sid / MODEL_FILE
        self.model = load_model(model_file) if model_file.exists() else None
        self.dim = self.model.arch.in_dim if self.model is not None else self.books.shape[2]

    def codes(self, x: np.ndarray, where: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """Nearest codes of embeddings x [N, D] -> (codes int [N, L], the residual before the
        last level float [N, d]); ``where`` names the embeddings in errors."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InputError(
                where,
                f"expected embeddings of dimension {self.dim} (what the quantizer of "
                f"{self.sid} was built on), got shape {tuple(x.shape)}",
            )
        z = latents(self.model, x) if self.model is not None else x.astype(np.float32)
        base = encode(z, self.books)
        return base, residual_before_last(z, base, self.books)

    def ranked_last(self, x: np.ndarray, where: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """Per embedding, its prefix (every level but the last, int [N, L-1]) and every
        last-level code from nearest to farthest (int [N, K])."""
        base, residual = self.codes(x, where)
        dist = ((residual[:, None, :] - self.books[-1][None]) ** 2).sum(-1)
        return base[:, :-1], np.argsort(dist, axis=1, kind="stable")
