"""``sidrec embed``: item text -> one embedding per item (``embeddings.npy``, row = item_id).

The text of an item is ``template`` filled from its columns, cut to ``max_chars``. An item whose
text comes out empty falls back to its brand, then to its categories (counted in the manifest).
Embeddings are cached per (model, text), so re-running on the same catalog is instant and a
grown catalog only encodes its new items.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sidrec.core.config import plain
from sidrec.core.dataset import read_dataset
from sidrec.core.embeddings import EMBEDDINGS_FILE, check_embeddings, read_npy
from sidrec.core.encoder import embed_items
from sidrec.core.io import atomic_dir
from sidrec.core.manifest import Run


def embed_dataset(
    data: str | Path,
    out: str | Path,
    cfg: dict[str, Any],
    from_npy: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Embed every item of a dataset directory into ``out`` with ``cfg``'s ``embed`` settings.

    With ``from_npy``, a precomputed [N, D] array (e.g. MiniOneRec's Qwen3-Embedding file) is
    checked and used instead of encoding.
    """
    ds, _ = read_dataset(data)
    e = cfg["embed"]
    run = Run(
        "embed",
        {**plain(e), "from_npy": str(from_npy) if from_npy else None},
        inputs={"data": str(data), **({"npy": str(from_npy)} if from_npy else {})},
        seed=None,
    )
    counts: dict[str, Any] = {"items": ds.items.height}
    if from_npy is not None:
        emb = read_npy(from_npy, "precomputed embeddings").astype(np.float32)
        check_embeddings(emb, ds.items.height, from_npy)
    else:
        emb, fallbacks, hits = embed_items(ds.items, e)
        check_embeddings(emb, ds.items.height, "the encoder output")
        counts |= {"text_fallbacks": fallbacks, "cache_hits": hits}
    counts["dim"] = int(emb.shape[1])
    with atomic_dir(out, overwrite=overwrite) as tmp:
        np.save(tmp / EMBEDDINGS_FILE, emb)
        return run.finish(tmp, counts)
