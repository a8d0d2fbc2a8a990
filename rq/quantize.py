"""Residual k-means quantizers: each level clusters what the levels before it left unexplained.

``rqkmeans`` uses faiss k-means. ``rqkmeans-constrained`` balances the clusters: with
k-means-constrained (an exact min-cost flow: every cluster holds N/K items give or take
``slack``) up to ``constrained_max_items`` items, and past that with Sinkhorn-balanced k-means,
which scales linearly in N and keeps clusters close to N/K.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np
from scipy.sparse import csr_matrix

from sidrec.core.errors import SidrecError
from sidrec.core.quantizer import Method, nearest, sinkhorn_potentials

# Sinkhorn-balanced k-means: the transport problem is solved on at most this many rows
SINKHORN_SAMPLE = 65_536
# rows assigned at a time (a [CHUNK, K] distance block)
CHUNK = 65_536


class Quantized(NamedTuple):
    """``codes``: int64 [N, L]; ``codebooks``: float32 [L, K, D]."""

    codes: np.ndarray
    codebooks: np.ndarray


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


def _distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Squared distances float32 [N, K] of x [N, D] to centroids [K, D]."""
    return (x**2).sum(1)[:, None] - 2 * x @ centroids.T + (centroids**2).sum(1)[None, :]


def balanced_labels(
    x: np.ndarray, centroids: np.ndarray, log_v: np.ndarray, temperature: float
) -> np.ndarray:
    """int64 [N]: each row of x [N, D] to the centroid that minimises its distance less the
    cluster's potential, :data:`CHUNK` rows at a time (never the whole [N, K] matrix)."""
    shift = (temperature * log_v).astype(np.float32)[None, :]
    out = np.empty(x.shape[0], dtype=np.int64)
    for start in range(0, x.shape[0], CHUNK):
        part = x[start : start + CHUNK]
        out[start : start + CHUNK] = np.argmin(_distances(part, centroids) - shift, axis=1)
    return out


def _sinkhorn_kmeans(x: np.ndarray, k: int, seed: int, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced k-means: faiss k-means, then rounds of Sinkhorn-balanced assignment and mean
    updates. The potentials come from a seeded sample of at most :data:`SINKHORN_SAMPLE` rows
    (the [N, K] transport problem of a million items would not fit in memory); every row is
    then assigned with them, so cluster sizes are N/K up to the sample's error."""
    n = x.shape[0]
    centroids = _kmeans(x, k, seed, iters)
    sample = x
    if n > SINKHORN_SAMPLE:
        rows = np.random.default_rng(seed).choice(n, SINKHORN_SAMPLE, replace=False)
        sample = x[np.sort(rows)]
    one_hot_rows = np.arange(n)
    for _ in range(max(3, iters // 4)):
        log_v, temperature = sinkhorn_potentials(_distances(sample, centroids))
        labels = balanced_labels(x, centroids, log_v, temperature)
        members = csr_matrix((np.ones(n, dtype=np.float32), (labels, one_hot_rows)), shape=(k, n))
        counts = np.bincount(labels, minlength=k)[:, None]
        sums = np.asarray(members @ x)
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
    return centroids.astype(np.float32), labels


def _balanced_kmeans(
    x: np.ndarray, k: int, seed: int, iters: int, slack: float, max_items: int
) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    if n > max_items:
        print(
            f"rqkmeans-constrained: {n:,} items is past sid.constrained_max_items={max_items:,}, "
            "where the exact min-cost flow grows too slow; using Sinkhorn-balanced k-means",
            file=sys.stderr,
        )
        return _sinkhorn_kmeans(x, k, seed, iters)
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
            labels = nearest(residual, centroids)
        codes[:, level] = labels
        residual -= centroids[labels]
        books.append(centroids)
    return Quantized(codes, np.stack(books))


def reconstruction_error(x: np.ndarray, codes: np.ndarray, codebooks: np.ndarray) -> float:
    """Mean squared error of the quantized vectors, relative to the mean squared norm of x."""
    recon = sum(codebooks[lv][codes[:, lv]] for lv in range(codebooks.shape[0]))
    return float(((x - recon) ** 2).sum(axis=1).mean() / (x**2).sum(axis=1).mean())
