import json
from pathlib import Path

import pytest

from sidrec.core.config import load_config
from sidrec.core.dataset import read_dataset
from sidrec.core.errors import InputError, SidrecError
from sidrec.core.sids import read_sid_dir
from sidrec.data.stage import build_from_config, import_letter_dir


@pytest.fixture(scope="module")
def beauty(
    letter_src: Path, beauty_titles: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("beauty")
    manifest = import_letter_dir(
        root / "data",
        letter_src,
        "Beauty",
        titles=beauty_titles / "Beauty.titles.json",
        asins=beauty_titles / "Beauty.item2asin.tsv",
        sid_out=root / "sid",
    )
    return root / "data", root / "sid", manifest


def test_beauty_counts_match_the_protocol(beauty: tuple[Path, Path, dict]) -> None:
    data, _, manifest = beauty
    assert manifest["counts"] == {
        "items": 12101,
        "users": 22363,
        "interactions": 198502,
        "train_examples": 131413,
        "valid_examples": 22363,
        "test_examples": 22363,
    }
    ds, _ = read_dataset(data)
    assert ds.train["history"].list.len().max() == 20
    assert ds.test["history"].list.len().max() == 20
    cut = (ds.sequences["item_ids"].list.len() - 1 > 20).sum()
    assert cut == 1019  # test histories cut to the last 20 items (the data's provenance notes)
    # test history = everything before the test target, including the validation item
    assert ds.test["history"][0][-1] == ds.valid["target"][0]


def test_beauty_titles_placeholders_and_asins(beauty: tuple[Path, Path, dict]) -> None:
    data, _, manifest = beauty
    assert manifest["placeholder_titles"] == 15 and manifest["items_without_title"] == 15
    ds, _ = read_dataset(data)
    assert ds.items["title"][494] == ""
    assert ds.items["title"][0] == "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce"
    assert ds.items["source_id"][0] == "B004756YJA"


def test_beauty_sids_are_letters(beauty: tuple[Path, Path, dict]) -> None:
    _, sid, _ = beauty
    report = json.loads((sid / "report.json").read_text())
    assert report["distinct_sids"] == 12088 and report["shared_sids"] == 11
    assert [lv["used"] for lv in report["levels"]] == [197, 256, 256, 256]
    assert report["distinct_prefixes"] == 11696 and report["max_items_per_prefix"] == 27
    assert len(read_sid_dir(sid).codes) == 12101


def _write(tmp: Path, inter: object) -> Path:
    tmp.mkdir(exist_ok=True)
    (tmp / "X.inter.json").write_text(json.dumps(inter))
    return tmp


def test_bad_interactions_are_named(tmp_path: Path) -> None:
    src = _write(tmp_path / "a", {"0": [0, 1, 2], "1": []})
    with pytest.raises(InputError, match=r"X\.inter\.json: user '1': expected a non-empty list"):
        import_letter_dir(tmp_path / "o", src, "X")
    src = _write(tmp_path / "b", {"0": [0, 1, "z"]})
    with pytest.raises(InputError, match="user '0': expected non-negative integer item ids"):
        import_letter_dir(tmp_path / "o", src, "X")
    (tmp_path / "b" / "X.inter.json").write_text('{"0": [0, 1,\n 2]]')
    with pytest.raises(InputError, match=r"X\.inter\.json, line 2: invalid JSON"):
        import_letter_dir(tmp_path / "o", src, "X")
    src = _write(tmp_path / "c", {"0": [0, 1, 2, 9]})
    (src / "X.index.json").write_text(json.dumps({str(i): ["<a_0>", f"<b_{i}>"] for i in range(3)}))
    with pytest.raises(
        InputError, match=r"X\.index\.json: has SIDs for 3 items, the catalog has 10"
    ):
        import_letter_dir(tmp_path / "o", src, "X")
    with pytest.raises(InputError, match="interaction file does not exist"):
        import_letter_dir(tmp_path / "o", tmp_path / "c", "Y")
    assert not (tmp_path / "o").exists()


def test_a_temporal_split_is_refused_for_letter(tmp_path: Path) -> None:
    src = _write(tmp_path / "a", {"0": [0, 1, 2, 3]})
    cfg = load_config(
        None,
        [
            "data.source=letter",
            f"data.letter.src={src}",
            "data.letter.dataset=X",
            "data.split=temporal",
        ],
    )
    with pytest.raises(
        SidrecError, match="data.split=temporal is not possible for data.source=letter"
    ):
        build_from_config(cfg, tmp_path / "o")
