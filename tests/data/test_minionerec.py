import csv
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from sidrec.core.config import load_config
from sidrec.core.dataset import read_dataset
from sidrec.core.errors import InputError, SidrecError
from sidrec.core.sids import SidTable, read_sid_dir
from sidrec.data.stage import (
    build_from_config,
    export_minionerec_dir,
    import_minionerec_dir,
    synth,
    write_imported_sids,
)

NAME = "Industrial_and_Scientific"
STEM = f"{NAME}_5_2016-10-2018-11"


@pytest.fixture(scope="module")
def imported(minionerec_src: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mor")
    import_minionerec_dir(root / "data", minionerec_src, NAME, sid_out=root / "sid")
    return root / "data", root / "sid"


def test_import_counts(imported: tuple[Path, Path]) -> None:
    ds, manifest = read_dataset(imported[0])
    assert ds.items.height == 3686
    assert (ds.train.height, ds.valid.height, ds.test.height) == (0, 4532, 4533)
    assert manifest["missing_splits"] == ["train"]
    assert manifest["minionerec_stem"] == STEM
    assert manifest["sequence_chain_breaks"] == 0
    # sequences rebuilt from the rows: first history + every target
    assert ds.sequences["item_ids"].list.len().sum() == 22743
    assert ds.items["description"].str.starts_with("['").sum() == 0


def test_shipped_sids_report(imported: tuple[Path, Path]) -> None:
    report = json.loads((imported[1] / "report.json").read_text())
    assert report["method"] == "imported:minionerec"
    assert report["shared_sids"] == 15
    assert report["levels"][0]["used"] == 48 and report["levels"][0]["codebook_size"] == 256


def test_export_reproduces_the_csvs_byte_for_byte(
    imported: tuple[Path, Path], minionerec_src: Path, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    manifest = export_minionerec_dir(imported[0], imported[1], out)
    assert manifest["counts"] == {"valid": 4532, "test": 4533}
    for split in ("valid", "test"):
        ours = (out / split / f"{STEM}.csv").read_bytes()
        theirs = (minionerec_src / split / f"{STEM}.csv").read_bytes()
        assert ours == theirs, split
    assert not (out / "train").exists()
    for sub, name in (("index", f"{NAME}.index.json"), ("info", f"{STEM}.txt")):
        assert (out / sub / name).read_bytes() == (minionerec_src / sub / name).read_bytes()
    items = json.loads((out / "index" / f"{NAME}.item.json").read_text())
    theirs = json.loads((minionerec_src / "index" / f"{NAME}.item.json").read_text())
    assert [v["title"] for v in items.values()] == [v["title"] for v in theirs.values()]


def test_synth_export_then_import_round_trips(tmp_path: Path) -> None:
    synth(tmp_path / "d", n_items=300, n_users=300, seed=0, split="temporal", max_history=10)
    codes = [[i // 256, i % 256, 0] for i in range(300)]
    write_imported_sids(tmp_path / "s", SidTable(codes, [256, 256, 256]), "test", {})
    export_minionerec_dir(tmp_path / "d", tmp_path / "s", tmp_path / "m")
    import_minionerec_dir(tmp_path / "d2", tmp_path / "m", "synth", sid_out=tmp_path / "s2")
    a, _ = read_dataset(tmp_path / "d")
    b, _ = read_dataset(tmp_path / "d2")
    for split in ("train", "valid", "test"):
        assert a.split(split).equals(b.split(split)), split
    assert a.items["title"].equals(b.items["title"])
    assert read_sid_dir(tmp_path / "s2").codes == codes


def _copy_src(minionerec_src: Path, dest: Path, valid_rows: int = 50) -> Path:
    for sub in ("index", "test"):
        shutil.copytree(minionerec_src / sub, dest / sub)
    (dest / "valid").mkdir()
    lines = (minionerec_src / "valid" / f"{STEM}.csv").read_text().splitlines(keepends=True)
    (dest / "valid" / f"{STEM}.csv").write_text("".join(lines[: valid_rows + 1]))
    return dest / "valid" / f"{STEM}.csv"


def _edit_row(path: Path, row: int, column: str, value: str) -> None:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    rows[row][column] = value
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def test_bad_rows_name_file_and_line(minionerec_src: Path, tmp_path: Path) -> None:
    valid = _copy_src(minionerec_src, tmp_path / "src")
    _edit_row(valid, 9, "history_item_id", "[12, 'x']")
    with pytest.raises(InputError, match=rf"valid/{STEM}\.csv, line 11: expected history_item_id"):
        import_minionerec_dir(tmp_path / "out", tmp_path / "src", NAME)
    _edit_row(valid, 9, "history_item_id", "[12, 99999]")
    with pytest.raises(InputError, match=r"line 11: unknown item id 99999 \(items are 0\.\.3685\)"):
        import_minionerec_dir(tmp_path / "out", tmp_path / "src", NAME)
    _edit_row(valid, 9, "history_item_id", "[12]")
    _edit_row(valid, 2, "item_id", "abc")
    with pytest.raises(InputError, match="line 4: expected an integer item_id, got 'abc'"):
        import_minionerec_dir(tmp_path / "out", tmp_path / "src", NAME)
    assert not (tmp_path / "out").exists()


def test_header_only_split_and_missing_dirs(minionerec_src: Path, tmp_path: Path) -> None:
    valid = _copy_src(minionerec_src, tmp_path / "src", valid_rows=0)
    with pytest.raises(InputError, match="header but no rows"):
        import_minionerec_dir(tmp_path / "out", tmp_path / "src", NAME)
    valid.unlink()
    manifest = import_minionerec_dir(tmp_path / "out", tmp_path / "src", NAME)
    assert manifest["missing_splits"] == ["train", "valid"]
    assert pl.read_parquet(tmp_path / "out" / "valid.parquet").height == 0
    with pytest.raises(InputError, match="MiniOneRec directory does not exist"):
        import_minionerec_dir(tmp_path / "o2", tmp_path / "nowhere", NAME)
    shutil.rmtree(tmp_path / "src" / "test")
    with pytest.raises(SidrecError, match="no split CSV found for Industrial"):
        import_minionerec_dir(tmp_path / "o3", tmp_path / "src", NAME)


def test_split_and_max_history_are_honoured(tmp_path: Path) -> None:
    """data.split and data.max_history reach a MiniOneRec import: its own temporal split with
    histories cut to max_history, a leave-one-out split of the rebuilt sequences, or a clear
    refusal where the files cannot give what is asked."""
    synth(tmp_path / "d", n_items=300, n_users=300, seed=0, split="temporal", max_history=10)
    codes = [[i // 256, i % 256, 0] for i in range(300)]
    write_imported_sids(tmp_path / "s", SidTable(codes, [256, 256, 256]), "test", {})
    export_minionerec_dir(tmp_path / "d", tmp_path / "s", tmp_path / "m")
    base = load_config(
        None,
        [
            "data.source=minionerec",
            f"data.minionerec.src={tmp_path / 'm'}",
            "data.minionerec.dataset=synth",
        ],
    )
    cut = {**base, "data": {**base["data"], "split": "temporal", "max_history": 3}}
    manifest = build_from_config(cut, tmp_path / "t3")
    ds, _ = read_dataset(tmp_path / "t3")
    full, _ = read_dataset(tmp_path / "d")
    assert manifest["split"] == {"protocol": "temporal", "max_history": 3, "given": True}
    assert ds.test["history"].to_list() == [h[-3:] for h in full.test["history"].to_list()]
    loo = {**base, "data": {**base["data"], "split": "loo", "max_history": 5}}
    manifest = build_from_config(loo, tmp_path / "loo")
    ds, _ = read_dataset(tmp_path / "loo")
    assert manifest["split"]["protocol"] == "loo" and ds.test.height == ds.sequences.height
    assert ds.test["history"].list.len().max() == 5
    longer = {**base, "data": {**base["data"], "split": "temporal", "max_history": 20}}
    with pytest.raises(SidrecError, match="at most 10 items, so data.max_history=20 cannot"):
        build_from_config(longer, tmp_path / "t20")
