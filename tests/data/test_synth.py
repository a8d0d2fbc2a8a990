from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from sidrec.app.cli import main
from sidrec.core.dataset import Dataset, read_dataset
from sidrec.core.errors import SidrecError
from sidrec.data.stage import synth
from sidrec.data.synth import generate


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "demo"
    synth(out, n_items=800, n_users=1500, seed=3)
    return out


def test_same_seed_gives_identical_files(demo: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synth(again, n_items=800, n_users=1500, seed=3)
    for name in ("items", "sequences", "train", "valid", "test"):
        a = pl.read_parquet(demo / f"{name}.parquet")
        b = pl.read_parquet(again / f"{name}.parquet")
        assert a.equals(b), name
    other, _ = generate(800, 1500, seed=4)
    assert not other.equals(pl.read_parquet(demo / "items.parquet"))


def test_catalog_has_realistic_text(demo: Path) -> None:
    ds, manifest = read_dataset(demo)
    items = ds.items
    assert items.height == 800 and manifest["source"] == "synth"
    assert (items["title"].str.len_chars() > 15).all()
    assert (items["description"].str.len_chars() > 60).all()
    assert all(b in t for b, t in zip(items["brand"], items["title"], strict=True))
    assert (items["categories"].list.len() == 2).all()
    assert items["title"].n_unique() > 0.95 * items.height
    assert items["brand"].n_unique() >= 20


def test_sequences_have_popularity_skew_and_repeats(demo: Path) -> None:
    ds, _ = read_dataset(demo)
    counts = Counter(ds.sequences["item_ids"].explode().to_list())
    top = sum(c for _, c in counts.most_common(8)) / sum(counts.values())  # top 1% of items
    assert 0.05 < top < 0.4
    repeats = sum(len(s) - len(set(s)) for s in ds.sequences["item_ids"].to_list())
    assert repeats > 0
    assert ds.test.height == ds.valid.height == 1500  # loo: one per user


def _hit_rate_at_10(ds: Dataset, recommend: Callable[[list[int]], list[int]]) -> float:
    hits = sum(
        t in recommend(h) for h, t in zip(ds.test["history"], ds.test["target"], strict=True)
    )
    return hits / ds.test.height


def test_item_to_item_transitions_beat_popularity_by_far(demo: Path) -> None:
    ds, _ = read_dataset(demo)
    popular = [i for i, _ in Counter(ds.train["target"].to_list()).most_common(10)]
    nexts: dict[int, Counter] = defaultdict(Counter)
    for h, t in zip(ds.train["history"].to_list(), ds.train["target"].to_list(), strict=True):
        nexts[h[-1]][t] += 1

    def transitions(history: list[int]) -> list[int]:
        recs = [i for i, _ in nexts[history[-1]].most_common(10)]
        return recs + [i for i in popular if i not in recs][: 10 - len(recs)]

    pop_hr = _hit_rate_at_10(ds, lambda h: popular)
    seq_hr = _hit_rate_at_10(ds, transitions)
    assert seq_hr > 3 * pop_hr and seq_hr - pop_hr > 0.2, (seq_hr, pop_hr)


def test_temporal_split_orders_by_time(tmp_path: Path) -> None:
    manifest = synth(
        tmp_path / "t", n_items=300, n_users=400, seed=1, split="temporal", max_history=10
    )
    c = manifest["counts"]
    total = c["train_examples"] + c["valid_examples"] + c["test_examples"]
    assert c["train_examples"] == int(total * 0.8) and c["valid_examples"] == int(total * 0.1)
    ds, _ = read_dataset(tmp_path / "t")
    assert ds.train["history"].list.len().max() <= 10


def test_too_small_catalog_is_rejected() -> None:
    with pytest.raises(SidrecError, match="n_items >="):
        generate(10, 10, 0)


def test_stats_command_prints_a_table(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", "--data", str(demo)]) == 0
    out = capsys.readouterr().out
    for row in ("items", "users", "interactions", "sequence_length.median", "popularity.gini"):
        assert row in out
    assert "800" in out and "1,500" in out
