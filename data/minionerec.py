"""MiniOneRec's processed files, in and out.

Layout (``<name>`` e.g. ``Industrial_and_Scientific``, ``<stem>`` e.g.
``Industrial_and_Scientific_5_2016-10-2018-11``)::

    train|valid|test/<stem>.csv   user_id,history_item_title,item_title,history_item_id,item_id,
                                  history_item_sid,item_sid (lists as Python literals)
    info/<stem>.txt               <sid> TAB title TAB item_id, one line per item
    index/<name>.index.json       {"item_id": ["<a_1>", "<b_2>", "<c_3>"]}
    index/<name>.item.json        {"item_id": {"title", "description", "brand", "categories"}}

A missing split file is tolerated and recorded (MiniOneRec's own Industrial release lacks the
train CSV in some copies). Users' sequences are rebuilt from the rows: each user's first row's
history, then every row's target in row order.
"""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path
from typing import Any

import polars as pl

from sidrec.core.dataset import SPLITS, Dataset, examples_frame, items_frame, sequences_frame
from sidrec.core.errors import InputError, SidrecError, require_file
from sidrec.core.io import read_json
from sidrec.core.sids import SidTable, read_index_json, sid_tokens

CSV_COLUMNS = [
    "user_id",
    "history_item_title",
    "item_title",
    "history_item_id",
    "item_id",
    "history_item_sid",
    "item_sid",
]


def _literal_list(text: str) -> list[Any] | None:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, list) else None


def _text(value: Any) -> str:
    """MiniOneRec stores descriptions as stringified Python lists; keep the plain text.

    Some of its lists are not valid literals (quotes inside items were mangled upstream); their
    brackets and item separators are stripped instead.
    """
    if not isinstance(value, str):
        return "" if value is None else str(value)
    if not value.startswith("["):
        return value
    parts = _literal_list(value)
    if parts is None and value.startswith("['") and value.endswith("']"):
        parts = value[2:-2].split("', '")
    return " ".join(str(p) for p in parts) if parts is not None else value


def _read_items(path: Path) -> pl.DataFrame:
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise InputError(path, "expected a JSON object mapping item id to its fields")
    n = len(raw)
    rows: dict[str, list[Any]] = {"title": [], "description": [], "brand": [], "categories": []}
    for i in range(n):
        entry = raw.get(str(i))
        if not isinstance(entry, dict) or not isinstance(entry.get("title"), str):
            raise InputError(
                path,
                f"expected item ids 0..{n - 1}, each with a title; item {i} "
                f"is {'missing' if entry is None else 'malformed'}",
            )
        rows["title"].append(entry["title"])
        rows["description"].append(_text(entry.get("description")))
        rows["brand"].append(str(entry.get("brand") or ""))
        cats = entry.get("categories") or ""
        parsed = _literal_list(cats) if isinstance(cats, str) else cats
        rows["categories"].append(
            [str(c) for c in parsed]
            if parsed is not None
            else [c.strip() for c in cats.split(",") if c.strip()]
        )
    return items_frame(rows)


def _split_file(src: Path, split: str, name: str) -> Path | None:
    found = sorted((src / split).glob(f"{name}*.csv"))
    if len(found) > 1:
        raise SidrecError(
            f"{src / split}: several CSV files match {name}*.csv: "
            f"{[f.name for f in found]}; keep one"
        )
    return found[0] if found else None


def _read_rows(path: Path, n_items: int) -> list[tuple[str, list[int], int]]:
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [
            c
            for c in ("user_id", "history_item_id", "item_id")
            if c not in (reader.fieldnames or [])
        ]
        if missing:
            raise InputError(
                path, f"expected columns {CSV_COLUMNS}, missing {missing}", row=1, row_label="line"
            )
        for rec in reader:
            where = {"row": reader.line_num, "row_label": "line"}
            history = _literal_list(rec["history_item_id"] or "")
            if not history or not all(isinstance(i, int) for i in history):
                raise InputError(
                    path,
                    "expected history_item_id to be a non-empty list of "
                    f"integers, got {rec['history_item_id']!r}",
                    **where,
                )
            try:
                target = int(rec["item_id"])
            except (TypeError, ValueError):
                raise InputError(
                    path, f"expected an integer item_id, got {rec['item_id']!r}", **where
                ) from None
            bad = [i for i in [*history, target] if not 0 <= i < n_items]
            if bad:
                raise InputError(
                    path, f"unknown item id {bad[0]} (items are 0..{n_items - 1})", **where
                )
            rows.append((rec["user_id"], history, target))
    if not rows:
        raise InputError(path, "the split file has a header but no rows")
    return rows


def import_minionerec(
    src: str | Path, dataset: str
) -> tuple[Dataset, dict[str, Any], SidTable | None]:
    """Read MiniOneRec's files for ``dataset`` from ``src``.

    Returns the dataset, manifest fields (file stem, missing splits, chain breaks) and the
    shipped SIDs (None when there is no index file).
    """
    src = require_file(src, "MiniOneRec directory")
    items = _read_items(require_file(src / "index" / f"{dataset}.item.json", "item file"))
    splits: dict[str, list[tuple[str, list[int], int]]] = {}
    missing, stems = [], set()
    for split in SPLITS:
        path = _split_file(src, split, dataset)
        if path is None:
            missing.append(split)
            splits[split] = []
        else:
            stems.add(path.stem)
            splits[split] = _read_rows(path, items.height)
    if len(missing) == len(SPLITS):
        raise SidrecError(f"{src}: no split CSV found for {dataset} under train/, valid/, test/")
    if len(stems) > 1:
        raise SidrecError(f"{src}: split files disagree on their name: {sorted(stems)}")

    seqs: dict[str, list[int]] = {}
    breaks = 0
    for split in SPLITS:
        for user, history, target in splits[split]:
            seq = seqs.get(user)
            if seq is None:
                seqs[user] = [*history, target]
                continue
            if seq[-len(history) :] != history:
                breaks += 1
            seq.append(target)
    sequences = sequences_frame(list(seqs), list(seqs.values()), [None] * len(seqs))
    index = src / "index" / f"{dataset}.index.json"
    sids = read_index_json(index, items.height) if index.exists() else None
    ds = Dataset(items, sequences, *(examples_frame(splits[s]) for s in SPLITS))
    extra = {
        "minionerec_stem": stems.pop(),
        "missing_splits": missing,
        "sequence_chain_breaks": breaks,
    }
    return ds, extra, sids


def export_minionerec(
    ds: Dataset, sids: SidTable, dataset: str, stem: str, out: Path
) -> dict[str, int]:
    """Write ``ds`` with ``sids`` into ``out`` in MiniOneRec's layout; returns rows per file."""
    if len(sids.codes) != ds.items.height:
        raise SidrecError(
            f"the SID directory has {len(sids.codes)} items, the dataset "
            f"{ds.items.height}; they must describe the same catalog"
        )
    titles = ds.items["title"].to_list()
    sid_str = sids.sids
    written: dict[str, int] = {}
    for split in SPLITS:
        frame = ds.split(split)
        if frame.height == 0:
            continue
        (out / split).mkdir(parents=True)
        with (out / split / f"{stem}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for user, history, target in frame.iter_rows():
                writer.writerow(
                    [
                        user,
                        str([titles[i] for i in history]),
                        titles[target],
                        str(history),
                        target,
                        str([sid_str[i] for i in history]),
                        sid_str[target],
                    ]
                )
        written[split] = frame.height
    (out / "index").mkdir()
    (out / "info").mkdir()
    index = {str(i): sid_tokens(c) for i, c in enumerate(sids.codes)}
    (out / "index" / f"{dataset}.index.json").write_text(json.dumps(index), encoding="utf-8")
    item_json = {
        str(r["item_id"]): {
            "title": r["title"],
            "description": str([r["description"]]) if r["description"] else "",
            "brand": r["brand"],
            "categories": ", ".join(r["categories"]),
        }
        for r in ds.items.iter_rows(named=True)
    }
    (out / "index" / f"{dataset}.item.json").write_text(
        json.dumps(item_json, indent=2), encoding="utf-8"
    )
    with (out / "info" / f"{stem}.txt").open("w", encoding="utf-8") as f:
        for i, title in enumerate(titles):
            f.write(f"{sid_str[i]}\t{title}\t{i}\n")
    return written
