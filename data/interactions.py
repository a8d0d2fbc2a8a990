"""Your own catalog: an interactions file and an items file -> interactions and item text.

Both files are CSV, TSV, JSON lines or parquet (by extension: ``.csv``, ``.tsv``, ``.jsonl`` /
``.ndjson`` / ``.json``, ``.parquet``; gzip for the text formats: ``.csv.gz`` ...). Columns are
mapped by name. Interactions: user, item and time (integer unix seconds, or an ISO-8601 date or
date-time, read as UTC). Items: item, title, and optionally description, brand and categories
(a list, or one string split on ``|``).

Rules, the same as for Amazon's files: a row whose user, item or time is missing or does not
parse stops the import with the file and its line (row for parquet); so do a missing column
and an item listed twice. Counted and reported in the manifest's ``skipped``: exact duplicate
events (same user, item and time), events outside the month window (when one is given),
events whose item has no metadata row or no title, then the users and items removed by the
iterated k-core.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from sidrec.core.errors import InputError, require_file
from sidrec.data.events import core_sequences, month_bounds, unique_in_window

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".ndjson": "json", ".json": "json"}
FORMATS[".parquet"] = "parquet"
CATEGORY_SEPARATOR = "|"


def _format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    found = FORMATS.get(suffixes[-1] if suffixes else "")
    if found is None or (found == "parquet" and path.suffix.lower() == ".gz"):
        raise InputError(path, f"unknown format; expected one of {sorted(FORMATS)} (or .gz)")
    return found


def read_table(path: str | Path) -> tuple[pl.DataFrame, int, str]:
    """The file's rows (text formats: every value a string), the line number of its first
    row, and what a row is called in errors (``line`` or ``row``)."""
    path = require_file(path, "file")
    fmt = _format(path)
    try:
        if fmt == "parquet":
            return pl.read_parquet(path), 1, "row"
        if fmt == "json":
            return pl.read_ndjson(path, infer_schema_length=None), 1, "line"
        sep = "\t" if fmt == "tsv" else ","
        return pl.read_csv(path, separator=sep, infer_schema=False), 2, "line"
    except (pl.exceptions.PolarsError, OSError, ValueError) as e:
        raise InputError(path, f"does not parse as {fmt}: {e}") from None


def _require(frame: pl.DataFrame, path: Path, columns: dict[str, str | None]) -> None:
    missing = {flag: c for flag, c in columns.items() if c and c not in frame.columns}
    if missing:
        named = ", ".join(f"{c!r} (--{f.replace('_', '-')})" for f, c in missing.items())
        raise InputError(path, f"has no column {named}; it has {frame.columns}")


def _time(value: Any) -> int:
    """Unix seconds from an integer (or integer string) or an ISO-8601 date / date-time."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _categories(value: Any) -> list[str]:
    if value is None:
        return []
    parts = value if isinstance(value, list) else str(value).split(CATEGORY_SEPARATOR)
    return [c for c in (_text(p) for p in parts) if c]


def _read_events(
    frame: pl.DataFrame, path: Path, cols: tuple[str, str, str], first: int, label: str
) -> Iterator[tuple[str, str, int]]:
    """(user, item, unix time) per row of the interactions ``frame`` read from ``path``;
    a row without a user, an item or a readable time is an InputError naming it."""
    user_col, item_col, time_col = cols
    for r, (user, item, when) in enumerate(frame.select(cols).iter_rows()):
        try:
            if user is None or item is None or not str(user).strip() or not str(item).strip():
                raise ValueError
            yield (str(user).strip(), str(item).strip(), _time(when))
        except (TypeError, ValueError):
            raise InputError(
                path,
                f"expected a user ({user_col}), an item ({item_col}) and a time ({time_col}: "
                f"unix seconds or an ISO-8601 date), got {user!r}, {item!r}, {when!r}",
                row=r + first,
                row_label=label,
            ) from None


def _item_meta(
    table: pl.DataFrame,
    path: Path,
    item_col: str,
    text_cols: dict[str, str | None],
    first: int,
    label: str,
) -> tuple[dict[str, dict[str, Any]], int]:
    """Item id -> its text fields (empty for an item without a title), and how many items
    had no title; a missing or repeated id is an InputError naming the row."""
    title_col, description_col = text_cols["title_col"], text_cols["description_col"]
    brand_col, category_col = text_cols["brand_col"], text_cols["category_col"]
    meta: dict[str, dict[str, Any]] = {}
    no_title = 0
    for r, row in enumerate(table.iter_rows(named=True)):
        item = row[item_col]
        key = "" if item is None else str(item).strip()
        if not key:
            raise InputError(path, f"expected an item id ({item_col})", r + first, label)
        if key in meta:
            raise InputError(path, f"lists item {key!r} twice", r + first, label)
        title = _text(row[title_col])
        if not title:
            no_title += 1
            meta[key] = {}
            continue
        meta[key] = {
            "title": title,
            "description": _text(row[description_col]) if description_col else "",
            "brand": _text(row[brand_col]) if brand_col else "",
            "categories": _categories(row[category_col]) if category_col else [],
        }
    return meta, no_title


def load_interactions(
    interactions: str | Path,
    items: str | Path,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
    title_col: str = "title",
    description_col: str | None = None,
    brand_col: str | None = None,
    category_col: str | None = None,
    user_k: int = 5,
    item_k: int = 5,
    window: tuple[int, int, int, int] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Read, check and filter the two files; ``window`` = (st_year, st_month, ed_year,
    ed_month) keeps events in those months. Returns items, sequences and manifest fields."""
    events_path, items_path = Path(interactions), Path(items)
    frame, first, label = read_table(events_path)
    _require(frame, events_path, {"user_col": user_col, "item_col": item_col, "time_col": time_col})
    cols = (user_col, item_col, time_col)

    rows = _read_events(frame, events_path, cols, first, label)
    events, skipped = unique_in_window(rows, month_bounds(*window) if window else None)

    table, first, label = read_table(items_path)
    text_cols = {
        "title_col": title_col,
        "description_col": description_col,
        "brand_col": brand_col,
        "category_col": category_col,
    }
    _require(table, items_path, {"item_col": item_col, **text_cols})
    meta, no_title = _item_meta(table, items_path, item_col, text_cols, first, label)
    wanted = {e[1] for e in events}
    items_frame, sequences, removed = core_sequences(
        events, meta, user_k, item_k, events_path, "the metadata join"
    )
    extra = {
        "files": {"interactions": str(events_path), "items": str(items_path)},
        "filters": {
            "user_k": user_k,
            "item_k": item_k,
            "window": None if window is None else "{}-{:02d}..{}-{:02d}".format(*window),
        },
        "skipped": {
            **skipped,
            "events_without_item_metadata": sum(e[1] not in meta for e in events),
            "items_without_title": no_title,
            "events_of_items_without_title": sum(e[1] in meta and not meta[e[1]] for e in events),
            "items_without_events": len(set(meta) - wanted),
            "events_removed_by_k_core": removed["events_removed_by_k_core"],
        },
    }
    return items_frame, sequences, extra
