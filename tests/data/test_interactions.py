"""Your own catalog (``sidrec data import-interactions``): four file formats read alike, column
mapping, the documented skips, and bad rows named by file and line."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from sidrec.app.cli import main
from sidrec.core.config import load_config
from sidrec.core.dataset import read_dataset
from sidrec.core.errors import InputError, SidrecError
from sidrec.data.stage import build_from_config, import_interactions

SHOP = Path(__file__).resolve().parents[2] / "docs" / "examples" / "shop"
TEXT = {"brand_col": "brand", "category_col": "categories"}
NO_TEXT = {"brand_col": None, "category_col": None}


def _import(tmp_path: Path, events: Path, items: Path, **kw: object) -> dict:
    args = {**TEXT, "user_k": 3, "item_k": 3, **kw}
    return import_interactions(tmp_path / "out", events, items, split="loo", **args)


def test_the_shipped_example_imports_with_its_skips_counted(tmp_path: Path) -> None:
    manifest = _import(tmp_path, SHOP / "interactions.csv", SHOP / "items.csv")
    ds, _ = read_dataset(tmp_path / "out")
    events = pl.read_csv(SHOP / "interactions.csv")
    assert manifest["counts"]["items"] == 28 and manifest["counts"]["users"] == 60
    skipped = manifest["skipped"]
    assert skipped["duplicate_events"] == 1 and skipped["events_without_item_metadata"] == 1
    assert manifest["counts"]["interactions"] == events.height - 2
    drill = ds.items.filter(pl.col("source_id") == "SKU001").row(0, named=True)
    assert drill["title"] == "Cordless Drill 18V" and drill["brand"] == "Ironleaf"
    assert drill["categories"] == ["Home Improvement", "Power Tools"]
    # each user's items in time order
    c001 = events.unique(maintain_order=True).filter(pl.col("user_id") == "C001")
    c001 = c001.sort("timestamp")["item_id"].to_list()
    seq = ds.sequences.filter(pl.col("user_id") == "C001")["item_ids"].to_list()[0]
    assert [ds.items["source_id"][i] for i in seq] == c001


def test_every_format_and_column_mapping_gives_the_same_dataset(tmp_path: Path) -> None:
    events = pl.read_csv(SHOP / "interactions.csv")
    items = pl.read_csv(SHOP / "items.csv")
    _import(tmp_path / "csv", SHOP / "interactions.csv", SHOP / "items.csv")
    want, _ = read_dataset(tmp_path / "csv" / "out")
    renamed = events.rename({"user_id": "who", "item_id": "what", "timestamp": "when"})
    # unix seconds instead of ISO dates
    renamed = renamed.with_columns(
        pl.col("when").str.to_datetime().dt.replace_time_zone("UTC").dt.epoch("s")
    )
    named_items = items.rename({"item_id": "what", "title": "name"})
    writers = {
        "tsv": lambda f, p: f.write_csv(p, separator="\t"),
        "jsonl": lambda f, p: f.write_ndjson(p),
        "parquet": lambda f, p: f.write_parquet(p),
    }
    for ext, write in writers.items():
        e, i = tmp_path / f"events.{ext}", tmp_path / f"items.{ext}"
        write(renamed, e)
        write(named_items, i)
        _import(
            tmp_path / ext, e, i, user_col="who", item_col="what", time_col="when", title_col="name"
        )
        got, _ = read_dataset(tmp_path / ext / "out")
        for name in ("items", "sequences", "train", "valid", "test"):
            assert got.split(name).equals(want.split(name)), (ext, name)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bad_input_names_the_file_and_line(tmp_path: Path) -> None:
    items = _write(tmp_path / "items.csv", "item_id,title\na,Hammer\nb,Saw\n")
    events = _write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu1,a,10\nu1,b,yesterday\n")
    with pytest.raises(InputError, match=r"e\.csv, line 3: expected a user .* 'yesterday'"):
        _import(tmp_path, events, items, **NO_TEXT)
    events = _write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu1,a,10\n,b,11\n")
    with pytest.raises(InputError, match=r"e\.csv, line 3"):
        _import(tmp_path, events, items, **NO_TEXT)
    events = _write(tmp_path / "e.csv", "user,item_id,timestamp\nu1,a,10\n")
    with pytest.raises(InputError, match=r"no column 'user_id' \(--user-col\)"):
        _import(tmp_path, events, items, **NO_TEXT)
    events = _write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu1,a,10\n")
    twice = _write(tmp_path / "twice.csv", "item_id,title\na,Hammer\na,Saw\n")
    with pytest.raises(InputError, match=r"twice\.csv, line 3: lists item 'a' twice"):
        _import(tmp_path, events, twice, **NO_TEXT)
    with pytest.raises(InputError, match="no column 'brand'"):
        _import(tmp_path, events, items)  # TEXT asks for brand and categories
    with pytest.raises(InputError, match="unknown format"):
        _import(tmp_path, _write(tmp_path / "e.xlsx", ""), items, **NO_TEXT)
    with pytest.raises(SidrecError, match="no interactions left"):
        _import(tmp_path, events, items, **NO_TEXT)
    with pytest.raises(SidrecError, match="window must be 4 integers"):
        import_interactions(tmp_path / "w", events, items, window=[2024, 1])


def test_the_window_and_the_command_line(tmp_path: Path) -> None:
    full = _import(tmp_path / "a", SHOP / "interactions.csv", SHOP / "items.csv")
    part = _import(
        tmp_path / "b", SHOP / "interactions.csv", SHOP / "items.csv", window=[2024, 1, 2024, 6]
    )
    assert part["skipped"]["events_outside_window"] > 0
    assert part["counts"]["interactions"] < full["counts"]["interactions"]
    args = ["data", "import-interactions", "--interactions", str(SHOP / "interactions.csv")]
    args += ["--items", str(SHOP / "items.csv"), "--brand-col", "brand", "--user-k", "3"]
    args += ["--item-k", "3", "--split", "loo", "--out", str(tmp_path / "cli")]
    assert main(args) == 0
    got, manifest = read_dataset(tmp_path / "cli")
    assert manifest["source"] == "interactions" and got.items.height == 28
    assert got.items["categories"].list.len().max() == 0  # no --category-col
    cfg = load_config(
        None,
        [
            "data.source=interactions",
            f"data.interactions.interactions={SHOP / 'interactions.csv'}",
            f"data.interactions.items={SHOP / 'items.csv'}",
            "data.interactions.user_k=3",
            "data.interactions.item_k=3",
        ],
    )
    assert build_from_config(cfg, tmp_path / "cfg")["counts"]["items"] == 28
    with pytest.raises(SidrecError, match="data.interactions.interactions must be set"):
        build_from_config(load_config(None, ["data.source=interactions"]), tmp_path / "x")
