"""Residual k-means quantizers: each level clusters what the levels before it left unexplained.

``rqkmeans`` uses faiss k-means; ``rqkmeans-constrained`` uses k-means-constrained so every
cluster holds N/K items give or take ``slack`` (balanced codes, fewer collisions).
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

import numpy as np

from sidrec.errors import SidrecError


class Method(str, Enum):
    RQKMEANS = "rqkmeans"
    CONSTRAINED = "rqkmeans-constrained"


class Quantized(NamedTuple):
    """``codes``: int64 [N, L]; ``codebooks``: float32 [L, K, D]."""

    codes: np.ndarray
    codebooks: np.ndarray


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (squared L2) for each row of x [N, D]; centroids [K, D]."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, idx = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return idx[:, 0].astype(np.int64)


def _kmeans(x: np.ndarray, k: int, seed: int, iters: int) -> np.ndarray:
    import faiss

    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=iters,
        seed=seed,
        verbose=False,
        max_points_per_centroid=max(256, x.shape[0] // k + 1),
    )
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return km.centroids.astype(np.float32)


def _balanced_kmeans(
    x: np.ndarray, k: int, seed: int, iters: int, slack: float, max_items: int
) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    if n > max_items:
        raise SidrecError(
            f"rqkmeans-constrained solves a min-cost flow over {n:,} items x {k} clusters per "
            f"iteration, which grows too slow past sid.constrained_max_items={max_items:,}; use "
            "--method rqkmeans for this catalog, or raise the limit if you can wait"
        )
    from k_means_constrained import KMeansConstrained

    size_min = int(np.floor(n / k * (1 - slack)))
    size_max = int(np.ceil(n / k * (1 + slack)))
    km = KMeansConstrained(
        n_clusters=k,
        size_min=size_min,
        size_max=size_max,
        random_state=seed,
        n_init=1,
        max_iter=iters,
    )
    labels = km.fit_predict(x.astype(np.float64))
    return km.cluster_centers_.astype(np.float32), labels.astype(np.int64)


def fit_residual(
    x: np.ndarray,
    method: Method,
    levels: int,
    codebook_size: int,
    seed: int,
    iters: int = 20,
    slack: float = 0.25,
    constrained_max_items: int = 50_000,
) -> Quantized:
    """Fit ``levels`` codebooks of ``codebook_size`` on x [N, D] and code every row.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
        >>> q = fit_residual(x, Method.RQKMEANS, levels=2, codebook_size=4, seed=0)
        >>> q.codes.shape, q.codebooks.shape
        ((64, 2), (2, 4, 8))
    """
    n = x.shape[0]
    if codebook_size > n:
        raise SidrecError(
            f"codebook_size {codebook_size} is larger than the {n} items; use a smaller codebook"
        )
    if levels < 1 or codebook_size < 2:
        raise SidrecError("need levels >= 1 and codebook_size >= 2")
    residual = x.astype(np.float32, copy=True)
    codes = np.empty((n, levels), dtype=np.int64)
    books = []
    for level in range(levels):
        if method is Method.CONSTRAINED:
            centroids, labels = _balanced_kmeans(
                residual, codebook_size, seed + level, iters, slack, constrained_max_items
            )
        else:
            centroids = _kmeans(residual, codebook_size, seed + level, iters)
            labels = _nearest(residual, centroids)
        codes[:, level] = labels
        residual -= centroids[labels]
        books.append(centroids)
    return Quantized(codes, np.stack(books))


def encode(x: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Codes [N, L] of x [N, D] under frozen codebooks [L, K, D] (nearest centroid per level)."""
    residual = x.astype(np.float32, copy=True)
    codes = np.empty((x.shape[0], codebooks.shape[0]), dtype=np.int64)
    for level, centroids in enumerate(codebooks):
        codes[:, level] = _nearest(residual, centroids)
        residual -= centroids[codes[:, level]]
    return codes


def reconstruction_error(x: np.ndarray, codes: np.ndarray, codebooks: np.ndarray) -> float:
    """Mean squared error of the quantized vectors, relative to the mean squared norm of x."""
    recon = sum(codebooks[lv][codes[:, lv]] for lv in range(codebooks.shape[0]))
    return float(((x - recon) ** 2).sum(axis=1).mean() / (x**2).sum(axis=1).mean())
