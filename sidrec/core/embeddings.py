"""The embedding directory format (written by ``sidrec embed``): ``embeddings.npy``, one
float32 row per item. Read by the SID stage and by the RL stage's semantic reward."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sidrec.core.errors import InputError, require_file

EMBEDDINGS_FILE = "embeddings.npy"


def check_embeddings(emb: np.ndarray, n_items: int, path: str | Path) -> None:
    """Raise InputError unless ``emb`` is a finite [n_items, D] float matrix."""
    if emb.ndim != 2 or emb.shape[0] != n_items:
        raise InputError(path, f"expected shape [{n_items}, D] (one row per item), got {emb.shape}")
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        raise InputError(
            path, f"{int(bad.sum())} rows hold NaN or inf (first: item {int(np.argmax(bad))})"
        )


def read_npy(path: str | Path, what: str) -> np.ndarray:
    """A numeric array from a ``.npy`` file; anything else is an InputError naming the file."""
    p = require_file(path, what)
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(
            p, f"expected a .npy array file ({what}), could not read it: {e}"
        ) from None
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.number):
        raise InputError(p, f"expected a numeric .npy array ({what}), got {type(arr).__name__}")
    return arr


def load_embeddings(emb_dir: str | Path, n_items: int | None = None) -> np.ndarray:
    """``embeddings.npy`` of an embedding directory [N, D], checked for shape (``n_items``
    rows, when given) and finite values."""
    path = Path(emb_dir) / EMBEDDINGS_FILE
    emb = read_npy(path, "embedding file")
    check_embeddings(emb, emb.shape[0] if n_items is None else n_items, path)
    return emb.astype(np.float32, copy=False)
