from pathlib import Path

import polars as pl
import pytest

from sidrec.core.config import load_config
from sidrec.core.dataset import read_dataset
from sidrec.core.errors import SidrecError
from sidrec.core.io import read_json
from sidrec.core.prompts import PromptSpec, fill_template, history_separator
from sidrec.core.sequences import sequence_windows, user_sequences
from sidrec.core.sids import SidTable, parse_sid, read_sid_dir
from sidrec.sft.convert import build_examples, convert


def _cfg(*overrides: str) -> dict:
    return load_config(None, ["convert.max_valid_examples=0", *overrides])


def test_tasks_counts_and_completions(small_run: dict[str, Path], tmp_path: Path) -> None:
    cfg = _cfg(
        "convert.tasks.sid_history=1.0",
        "convert.tasks.title_to_sid=2.0",
        "convert.tasks.sid_to_title=0.5",
        "convert.tasks.title_history_to_title=1.0",
    )
    manifest = convert(small_run["data"], small_run["sid"], tmp_path / "ex", cfg)
    ds, _ = read_dataset(small_run["data"])
    table = read_sid_dir(small_run["sid"])
    sids = set(table.sids)
    titled = sum(1 for t in ds.items["title"].to_list() if t)
    counts = manifest["counts"]["train"]
    assert counts == {
        "sid_history": ds.train.height,
        "title_to_sid": 2 * titled,
        "sid_to_title": round(0.5 * titled),
        "title_history_to_title": ds.train.height,
    }
    assert manifest["counts"]["valid"] == {"sid_history": ds.valid.height}
    train = pl.read_parquet(tmp_path / "ex" / "train.parquet")
    assert train.columns == ["prompt", "completion", "task", "template", "history"]
    # a prompt with a history can be rebuilt from its template and items (SFT shortens it so)
    for row in train.filter(pl.col("template") != "").head(50).iter_rows(named=True):
        sep = history_separator(row["task"], cfg["convert"]["item_separator"])
        assert row["prompt"] == fill_template(row["template"], row["history"], sep)
    assert (train.filter(pl.col("task") == "title_to_sid")["template"] == "").all()
    main = train.filter(pl.col("task") == "sid_history")
    assert set(main["completion"]) <= sids
    templates = cfg["convert"]["templates"]["sid_history"]
    used = {
        t for t in templates if main["prompt"].str.contains(t.split("{")[0], literal=True).any()
    }
    assert len(used) == len(templates)  # paraphrases are mixed
    for prompt in main["prompt"].head(20):
        assert all(s in sids for s in _sids_in(prompt))
    assert set(train.filter(pl.col("task") == "title_to_sid")["completion"]) <= sids


def _sids_in(text: str) -> list[str]:
    import re

    return ["".join(m) for m in re.findall(r"(<a_\d+>)(<b_\d+>)(<c_\d+>)", text)]


def test_valid_is_the_main_task_with_the_first_template(small_run: dict[str, Path]) -> None:
    ds, _ = read_dataset(small_run["data"])
    table = read_sid_dir(small_run["sid"])
    cfg = _cfg()
    frames, _ = build_examples(ds, table, cfg, seed=3, max_history=20)
    valid = frames["valid"]
    assert valid.height == ds.valid.height
    first = ds.valid.row(0, named=True)
    history = ", ".join(table.sids[i] for i in first["history"])
    assert valid["prompt"][0] == cfg["convert"]["templates"]["sid_history"][0].format(
        history=history
    )
    assert valid["completion"][0] == table.sids[first["target"]]


def test_same_seed_same_examples(small_run: dict[str, Path]) -> None:
    ds, _ = read_dataset(small_run["data"])
    table = read_sid_dir(small_run["sid"])
    a, _ = build_examples(ds, table, _cfg(), seed=1, max_history=20)
    b, _ = build_examples(ds, table, _cfg(), seed=1, max_history=20)
    c, _ = build_examples(ds, table, _cfg(), seed=2, max_history=20)
    assert a["train"].equals(b["train"])
    assert not a["train"].equals(c["train"])


def test_sequence_windows_cover_every_item_once() -> None:
    for n in range(1, 40):
        for w in (2, 3, 4, 7, 50):
            windows = sequence_windows(n, w)
            covered = [i for _, first, end in windows for i in range(first, end)]
            assert covered == list(range(1, n))
            assert all(end - start <= w and start < first for start, first, end in windows)
    with pytest.raises(SidrecError, match="at least 2 items"):
        sequence_windows(5, 1)


def test_sequence_format_rebuilds_each_users_training_sequence(small_run: dict[str, Path]) -> None:
    ds, _ = read_dataset(small_run["data"])
    table = read_sid_dir(small_run["sid"])
    seqs = user_sequences(ds)
    seqs_df = ds.sequences
    full = dict(zip(seqs_df["user_id"].to_list(), seqs_df["item_ids"].to_list(), strict=True))
    users = ds.train["user_id"].unique(maintain_order=True).to_list()
    for user, seq in zip(users, seqs, strict=True):
        assert seq == full[user][:-2]  # leave-one-out: valid and test targets held out
    cfg = _cfg(
        "sft.format=sequence",
        "convert.tasks.title_to_sid=0",
        "convert.tasks.sid_to_title=0",
        "convert.item_separator=''",
    )
    frames, counts = build_examples(ds, table, cfg, seed=0, max_history=50)
    train = frames["train"]
    assert counts["train"] == {"sid_sequence": len(seqs)}
    # prompt + completion of a user is the whole sequence; the loss covers every item but one
    rebuilt = sorted(p + c for p, c in zip(train["prompt"], train["completion"], strict=True))
    assert rebuilt == sorted("".join(table.sids[i] for i in s) for s in seqs)
    valid = frames["valid"].row(0, named=True)
    first = ds.valid.row(0, named=True)
    assert valid["prompt"] == "".join(table.sids[i] for i in first["history"])
    assert valid["task"] == "sid_sequence"


def test_sequence_windows_hold_the_datasets_history_length(
    small_run: dict[str, Path], tmp_path: Path
) -> None:
    """Training context = evaluation history: windows of max_history + 1 items, from the
    dataset's own max_history, and the examples' prompting.json records it."""
    data = small_run["root"] / "data-h3"
    from sidrec.data.stage import synth

    synth(data, n_items=120, n_users=150, seed=0, max_history=3)
    cfg = _cfg(
        "sft.format=sequence",
        "convert.tasks.title_to_sid=0",
        "convert.tasks.sid_to_title=0",
        "convert.item_separator=''",
    )
    manifest = convert(data, small_run["sid"], tmp_path / "ex", cfg)
    train = pl.read_parquet(tmp_path / "ex" / "train.parquet")
    lengths = [
        len(_sids_in(p + c)) for p, c in zip(train["prompt"], train["completion"], strict=True)
    ]
    assert max(lengths) == 4 and manifest["max_history"] == 3
    spec = PromptSpec.load(tmp_path / "ex")
    assert spec.max_history == 3 and spec.format == "sequence"


def test_bad_input_is_named(small_run: dict[str, Path], tmp_path: Path) -> None:
    ds, _ = read_dataset(small_run["data"])
    table = read_sid_dir(small_run["sid"])
    with pytest.raises(SidrecError, match="SID directory has 5 items but the dataset has 120"):
        build_examples(ds, SidTable(table.codes[:5], table.codebook_sizes), _cfg(), 0, 20)
    bad = _cfg("convert.templates.title_to_sid=['no field here']")
    with pytest.raises(SidrecError, match=r"templates.title_to_sid\[0\] must contain \{title\}"):
        build_examples(ds, table, bad, 0, 20)
    with pytest.raises(SidrecError, match="trains the main task only"):
        build_examples(ds, table, _cfg("sft.format=sequence"), 0, 20)
    with pytest.raises(SidrecError, match="main task"):
        build_examples(ds, table, _cfg("convert.tasks.sid_history=0"), 0, 20)
    with pytest.raises(SidrecError, match="unknown config key 'convert.task'; did you mean"):
        _cfg("convert.task.sid_history=1")


def test_manifest_records_format_and_inputs(small_run: dict[str, Path], tmp_path: Path) -> None:
    convert(small_run["data"], small_run["sid"], tmp_path / "ex", _cfg())
    manifest = read_json(tmp_path / "ex" / "manifest.json")
    assert manifest["format"] == "prompt"
    assert manifest["inputs"] == {"data": str(small_run["data"]), "sid": str(small_run["sid"])}
    assert parse_sid(pl.read_parquet(tmp_path / "ex" / "valid.parquet")["completion"][0])
