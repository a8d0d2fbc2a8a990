import json
from pathlib import Path

import polars as pl
import pytest

from sidrec.core.errors import InputError
from sidrec.core.sids import (
    SidTable,
    parse_sid,
    read_index_json,
    read_sid_dir,
    sid_string,
    sid_summary,
    write_sid_dir,
)


def test_sid_strings_round_trip() -> None:
    assert sid_string([12, 7, 200]) == "<a_12><b_7><c_200>"
    assert parse_sid("<a_12><b_7><c_200>") == [12, 7, 200]
    assert parse_sid(["<a_1>", "<b_2>", "<c_3>", "<d_4>"]) == [1, 2, 3, 4]


@pytest.mark.parametrize("bad", ["", "<a_1><c_2>", "<b_1>", "<a_1>x", "<a_-1>"])
def test_malformed_sids_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_sid(bad)


def test_summary_matches_hand_computed_values() -> None:
    # 4 items, K=4: SIDs (0,1) x2, (0,2), (3,1)
    s = sid_summary([[0, 1], [0, 1], [0, 2], [3, 1]], [4, 4])
    assert s["distinct_sids"] == 3 and s["collision_rate"] == pytest.approx(0.25)
    assert s["shared_sids"] == 1 and s["items_in_shared_sids"] == 2 and s["largest_bucket"] == 2
    a, b = s["levels"]
    assert a["used"] == 2 and a["utilization"] == 0.5
    # level a: p = (3/4, 1/4): H = 0.8113 bits, of log2(4) = 2
    assert a["entropy_bits"] == pytest.approx(0.811278, abs=1e-6)
    assert a["entropy_pct"] == pytest.approx(0.405639, abs=1e-6)
    assert b["largest_code_share"] == 0.75
    # prefixes (first level): 0 holds 3 items, 3 holds 1
    assert s["distinct_prefixes"] == 2 and s["max_items_per_prefix"] == 3
    assert s["mean_items_per_prefix"] == 2.0


def test_sid_dir_round_trip(tmp_path: Path) -> None:
    table = SidTable([[1, 2, 3], [1, 2, 4], [0, 0, 0, 1]], [8, 8, 8, 8])
    report = write_sid_dir(tmp_path, table, {"method": "test"})
    assert report["method"] == "test" and report["collision_rate"] == 0
    assert json.loads((tmp_path / "index.json").read_text())["2"] == [
        "<a_0>",
        "<b_0>",
        "<c_0>",
        "<d_1>",
    ]
    assert pl.read_parquet(tmp_path / "sids.parquet")["sid"][1] == "<a_1><b_2><c_4>"
    back = read_sid_dir(tmp_path)
    assert back.codes == table.codes and back.codebook_sizes == [8, 8, 8, 8]


def test_index_json_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "x.index.json"
    path.write_text(json.dumps({"0": ["<a_1>", "<b_2>"], "2": ["<a_1>", "<b_3>"]}))
    with pytest.raises(InputError, match=r"x\.index\.json: expected item ids 0\.\.1, got key '2'"):
        read_index_json(path)
    path.write_text(json.dumps({"0": ["<a_1>", "<c_2>"]}))
    with pytest.raises(InputError, match="item 0: expected level letter 'b'"):
        read_index_json(path)
    path.write_text('{"0": ["<a_1>",\n oops}')
    with pytest.raises(InputError, match=r"x\.index\.json, line 2: invalid JSON"):
        read_index_json(path)
