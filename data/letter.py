"""LC-Rec / LETTER files: ``<name>.inter.json`` (user -> time-ordered item ids), optional
``<name>.index.json`` (SIDs) and ``<name>.item.json`` (item text), plus an optional titles file
(``{"id": "title"}``) and an ASIN map (``item_id<TAB>asin`` with a header).

Titles of the form ``title_<n>`` are LETTER's placeholders for items without text; they are
treated as missing and counted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl

from sidrec.core.dataset import items_frame, sequences_frame
from sidrec.core.errors import InputError, require_file
from sidrec.core.io import read_json
from sidrec.core.sids import SidTable, read_index_json

_PLACEHOLDER = re.compile(r"^(title|description)_\d+$")


def _real_text(value: Any) -> str:
    text = "" if value is None else str(value)
    return "" if _PLACEHOLDER.match(text) else text


def _read_inter(path: Path) -> tuple[list[str], list[list[int]]]:
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise InputError(path, "expected a JSON object mapping user id to a list of item ids")
    users = sorted(raw, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    seqs = []
    for user in users:
        items = raw[user]
        if not isinstance(items, list) or not items:
            raise InputError(
                path, f"user {user!r}: expected a non-empty list of item ids, got {items!r}"
            )
        if not all(isinstance(i, int) and i >= 0 for i in items):
            raise InputError(path, f"user {user!r}: expected non-negative integer item ids")
        seqs.append(items)
    return users, seqs


def _read_asins(path: Path, n_items: int) -> list[str]:
    asins = [""] * n_items
    lines = require_file(path, "ASIN map").read_text(encoding="utf-8").splitlines()
    for line_no, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) >= n_items:
            raise InputError(
                path,
                f"expected 'item_id<TAB>asin' with item_id < {n_items}, got {line!r}",
                row=line_no,
                row_label="line",
            )
        asins[int(parts[0])] = parts[1]
    return asins


def import_letter(
    src: str | Path, dataset: str, titles: str | Path | None = None, asins: str | Path | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any], SidTable | None]:
    """Read LETTER's ``dataset`` from ``src``.

    Returns items, sequences, manifest fields (missing-text counts) and the shipped SIDs (None
    when there is no index file).
    """
    src = require_file(src, "LETTER directory")
    inter = require_file(src / f"{dataset}.inter.json", "interaction file")
    users, seqs = _read_inter(inter)
    index = src / f"{dataset}.index.json"
    item_file = src / f"{dataset}.item.json"
    item_text = read_json(item_file) if item_file.exists() else {}
    title_map = read_json(titles) if titles else {}
    sizes = [1 + max(max(s) for s in seqs)]
    sizes += [len(m) for m in (item_text, title_map) if m]
    sid_table = read_index_json(index) if index.exists() else None
    if sid_table is not None:
        sizes.append(len(sid_table.codes))
    n_items = max(sizes)
    if sid_table is not None and len(sid_table.codes) != n_items:
        raise InputError(
            index,
            f"has SIDs for {len(sid_table.codes)} items, the catalog has "
            f"{n_items}; expected one SID per item",
        )
    for user, seq in zip(users, seqs, strict=True):
        if max(seq) >= n_items:
            raise InputError(
                inter,
                f"user {user!r}: unknown item id {max(seq)} (the catalog has {n_items} items)",
            )

    rows: dict[str, list[Any]] = {"title": [], "description": [], "brand": [], "categories": []}
    placeholders = 0
    for i in range(n_items):
        entry = item_text.get(str(i), {})
        raw_title = title_map.get(str(i), entry.get("title"))
        title = _real_text(raw_title)
        placeholders += bool(raw_title) and not title
        rows["title"].append(title)
        rows["description"].append(_real_text(entry.get("description")))
        rows["brand"].append(str(entry.get("brand") or ""))
        cats = entry.get("categories") or []
        rows["categories"].append(cats if isinstance(cats, list) else [str(cats)])
    if asins:
        rows["source_id"] = _read_asins(Path(asins), n_items)
    items = items_frame(rows)
    extra = {
        "items_without_title": int((items["title"] == "").sum()),
        "placeholder_titles": placeholders,
    }
    return items, sequences_frame(users, seqs, [None] * len(users)), extra, sid_table
