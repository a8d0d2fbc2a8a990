"""Amazon 2018 raw files, written by the tests in the real format (gzip JSON lines)."""

import gzip
from pathlib import Path

import pytest
from conftest import timestamp, write_amazon18_raw, write_gz

from sidrec.core.dataset import read_dataset
from sidrec.core.errors import InputError, SidrecError
from sidrec.data.amazon18 import clean_title
from sidrec.data.events import k_core
from sidrec.data.stage import amazon18

NAME = "Tiny_Category"


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return write_amazon18_raw(tmp_path, NAME)


def test_filters_and_counts(raw: Path, tmp_path: Path) -> None:
    manifest = amazon18(
        tmp_path / "out",
        raw,
        NAME,
        split="temporal",
        max_history=10,
        user_k=3,
        item_k=3,
        st_year=2016,
        st_month=10,
        ed_year=2018,
        ed_month=11,
    )
    ds, _ = read_dataset(tmp_path / "out")
    assert manifest["counts"]["items"] == 6 and manifest["counts"]["users"] == 6
    assert manifest["counts"]["interactions"] == 36
    skipped = manifest["skipped"]
    assert skipped["duplicate_events"] == 1 and skipped["events_outside_window"] == 1
    assert skipped["items_dropped_for_title"] == 1 and skipped["duplicate_metadata_rows"] == 1
    assert skipped["events_removed_by_k_core"] == 4  # U6's three events, then RARE's last one
    assert ds.items["title"][0] == "Widget & Gadget 0"
    assert ds.items["description"][0] == "Great widget 0"
    assert ds.items["categories"][0].to_list() == ["Tools", "Widgets"]
    assert ds.items["source_id"].to_list() == [f"A{i}" for i in range(6)]
    ts = ds.sequences["timestamps"].to_list()
    assert all(t == sorted(t) for t in ts)
    assert (ds.train.height, ds.valid.height, ds.test.height) == (24, 3, 3)  # 30 windows
    assert manifest["minionerec_stem"] == f"{NAME}_3_2016-10-2018-11"


def test_loo_split(raw: Path, tmp_path: Path) -> None:
    manifest = amazon18(tmp_path / "out", raw, NAME, split="loo", max_history=2, user_k=3, item_k=3)
    assert manifest["counts"]["valid_examples"] == manifest["counts"]["test_examples"] == 6
    ds, _ = read_dataset(tmp_path / "out")
    assert ds.test["history"].list.len().max() == 2


def test_k_core_iterates_until_stable() -> None:
    events = [("u1", "a", 0), ("u1", "b", 1), ("u2", "a", 0), ("u2", "b", 1), ("u3", "a", 2)]
    # u3 has 1 event -> removed; then item a has 2 -> stays at k=2
    assert k_core(events, 2, 2) == events[:4]
    # with item_k=3, a drops after u3 goes; then users fall to 1 event and everything goes
    assert k_core(events, 2, 3) == []


def test_clean_title() -> None:
    assert clean_title("  A &amp; B   ", 20) == "A & B"
    assert clean_title("<br>x", 20) is None
    assert clean_title("", 20) is None and clean_title(None, 20) is None
    assert clean_title(" ".join(["w"] * 21), 20) is None


def test_bad_raw_input(raw: Path, tmp_path: Path) -> None:
    with (raw / f"{NAME}.json.gz").open("ab") as f:
        f.write(gzip.compress(b'{"reviewerID": "U1", "asin": \n'))
    with pytest.raises(InputError, match=rf"{NAME}\.json\.gz, line 44: invalid JSON"):
        amazon18(tmp_path / "out", raw, NAME, user_k=3, item_k=3)
    with pytest.raises(InputError, match="no review file"):
        amazon18(tmp_path / "out", raw, "Other")
    write_gz(raw / f"{NAME}.json.gz", [{"reviewerID": "U1", "asin": "A0"}])
    with pytest.raises(InputError, match="line 1: expected reviewerID, asin and an integer"):
        amazon18(tmp_path / "out", raw, NAME)
    write_gz(
        raw / f"{NAME}.json.gz",
        [{"reviewerID": "U1", "asin": "A0", "unixReviewTime": timestamp(2017, 1)}],
    )
    with pytest.raises(SidrecError, match="no interactions left"):
        amazon18(tmp_path / "out", raw, NAME)
    with pytest.raises(SidrecError, match="month must be 1..12"):
        amazon18(tmp_path / "out", raw, NAME, st_month=13)
    assert not (tmp_path / "out").exists()
