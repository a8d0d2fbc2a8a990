"""The canonical dataset directory (docs/formats.md).

``items.parquet``, ``sequences.parquet``, ``train/valid/test.parquet`` and ``manifest.json``,
validated on write and on read, written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from sidrec.core.errors import InputError, require_file
from sidrec.core.io import MANIFEST, atomic_dir, read_json
from sidrec.core.manifest import Run

ITEMS_SCHEMA = {
    "item_id": pl.Int64,
    "title": pl.String,
    "description": pl.String,
    "brand": pl.String,
    "categories": pl.List(pl.String),
    "source_id": pl.String,
}
SEQUENCES_SCHEMA = {
    "user_id": pl.String,
    "item_ids": pl.List(pl.Int64),
    "timestamps": pl.List(pl.Int64),
}
EXAMPLES_SCHEMA = {"user_id": pl.String, "history": pl.List(pl.Int64), "target": pl.Int64}
SPLITS = ("train", "valid", "test")


@dataclass
class Dataset:
    """A dataset in memory: one polars frame per file of the directory."""

    items: pl.DataFrame
    sequences: pl.DataFrame
    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame

    def split(self, name: str) -> pl.DataFrame:
        return getattr(self, name)

    def counts(self) -> dict[str, int]:
        return {
            "items": self.items.height,
            "users": self.sequences.height,
            "interactions": int(self.sequences["item_ids"].list.len().sum() or 0),
            **{f"{s}_examples": self.split(s).height for s in SPLITS},
        }


def items_frame(rows: dict[str, list[Any]]) -> pl.DataFrame:
    """Build ``items.parquet``'s frame from columns (``item_id`` is added as 0..N-1)."""
    n = len(rows["title"])
    cols = {"item_id": list(range(n)), **rows}
    for name in ITEMS_SCHEMA:
        cols.setdefault(name, [[] if name == "categories" else ""] * n)
    return pl.DataFrame(cols, schema=ITEMS_SCHEMA)


def sequences_frame(
    user_ids: list[str], item_ids: list[list[int]], timestamps: list[list[int] | None]
) -> pl.DataFrame:
    return pl.DataFrame(
        {"user_id": user_ids, "item_ids": item_ids, "timestamps": timestamps},
        schema=SEQUENCES_SCHEMA,
    )


def examples_frame(rows: list[tuple[str, list[int], int]]) -> pl.DataFrame:
    """Build a split's frame from ``(user_id, history, target)`` rows, keeping their order."""
    return pl.DataFrame(rows, schema=EXAMPLES_SCHEMA, orient="row")


def validate(ds: Dataset, where: str | Path) -> None:
    """Check the invariants every stage relies on; raise InputError naming the file and row."""
    n = ds.items.height
    if ds.items["item_id"].to_list() != list(range(n)):
        raise InputError(Path(where) / "items.parquet", "expected item_id to be exactly 0..N-1")
    seq_path = Path(where) / "sequences.parquet"
    for row, (items, ts) in enumerate(
        zip(ds.sequences["item_ids"].to_list(), ds.sequences["timestamps"].to_list(), strict=True)
    ):
        if not items:
            raise InputError(seq_path, "expected a non-empty item sequence", row=row)
        if ts is not None and len(ts) != len(items):
            raise InputError(seq_path, "expected one timestamp per item", row=row)
        bad = [i for i in items if not 0 <= i < n]
        if bad:
            raise InputError(seq_path, f"unknown item id {bad[0]} (items are 0..{n - 1})", row=row)
    for split in SPLITS:
        df = ds.split(split)
        path = Path(where) / f"{split}.parquet"
        ids = pl.concat([df["history"].explode(), df["target"]]).drop_nulls()
        if ids.len() and not (0 <= ids.min() and ids.max() < n):
            bad_row = next(
                r
                for r, (h, t) in enumerate(
                    zip(df["history"].to_list(), df["target"].to_list(), strict=True)
                )
                if not all(0 <= i < n for i in [*h, t])
            )
            raise InputError(path, f"unknown item id (items are 0..{n - 1})", row=bad_row)
        empty = df["history"].list.len() == 0
        if empty.any():
            raise InputError(path, "expected a non-empty history", row=int(empty.arg_max()))


def write_dataset(
    out: str | Path, ds: Dataset, run: Run, overwrite: bool = False, **manifest: Any
) -> dict[str, Any]:
    """Validate ``ds`` and write it as a dataset directory; return the manifest.

    ``manifest`` holds the source, split protocol, filters and skip counts to record.
    """
    with atomic_dir(out, overwrite=overwrite) as tmp:
        validate(ds, out)
        for name in ("items", "sequences", *SPLITS):
            getattr(ds, name).write_parquet(tmp / f"{name}.parquet")
        return run.finish(tmp, ds.counts(), **manifest)


def read_dataset(path: str | Path) -> tuple[Dataset, dict[str, Any]]:
    """Read and validate a dataset directory; return it with its manifest."""
    path = require_file(path, "dataset directory")
    manifest = read_json(require_file(path / MANIFEST, "dataset manifest (incomplete directory?)"))
    schemas = {"items": ITEMS_SCHEMA, "sequences": SEQUENCES_SCHEMA}
    frames = {}
    for name in ("items", "sequences", *SPLITS):
        file = require_file(path / f"{name}.parquet", f"{name} file")
        df = pl.read_parquet(file)
        schema = schemas.get(name, EXAMPLES_SCHEMA)
        missing = [c for c in schema if c not in df.columns]
        if missing:
            raise InputError(file, f"expected columns {list(schema)}, missing {missing}")
        frames[name] = df.select(list(schema)).cast(schema)
    ds = Dataset(**frames)
    validate(ds, path)
    return ds, manifest
