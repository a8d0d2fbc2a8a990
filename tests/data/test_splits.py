import polars as pl
import pytest

from sidrec.core.errors import SidrecError
from sidrec.data.splits import assemble, split_sequences


def _seqs(rows: list[tuple[str, list[int], list[int] | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "user_id": pl.String,
            "item_ids": pl.List(pl.Int64),
            "timestamps": pl.List(pl.Int64),
        },
        orient="row",
    )


def test_loo_uses_every_training_prefix_and_cuts_history() -> None:
    seqs = _seqs([("u", [1, 2, 3, 4, 5, 6], None), ("v", [7, 8], None)])
    train, valid, test, skipped = split_sequences(seqs, "loo", max_history=2)
    assert train.rows() == [("u", [1], 2), ("u", [1, 2], 3), ("u", [2, 3], 4), ("v", [7], 8)]
    assert valid.rows() == [("u", [3, 4], 5)]
    assert test.rows() == [("u", [4, 5], 6)]
    assert skipped == {"users_too_short_for_split": 1}


def test_temporal_sorts_all_windows_by_target_time_and_cuts_8_1_1() -> None:
    # 11 windows: user a has targets at t=1..6 (even times), b at odd times
    seqs = _seqs(
        [
            ("a", [0, 1, 2, 3, 4, 5, 6], [0, 2, 4, 6, 8, 10, 12]),
            ("b", [7, 8, 9, 10, 11, 12], [0, 1, 3, 5, 7, 9]),
        ]
    )
    train, valid, test, _ = split_sequences(seqs, "temporal", max_history=10)
    assert (train.height, valid.height, test.height) == (8, 1, 2)  # int(8.8), int(1.1), rest
    order = [r[2] for r in train.rows() + valid.rows() + test.rows()]
    assert order == [8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 6]
    assert test.rows()[-1] == ("a", [0, 1, 2, 3, 4, 5], 6)


def test_temporal_needs_timestamps_and_protocol_must_be_known() -> None:
    seqs = _seqs([("u", [1, 2, 3], None)])
    with pytest.raises(SidrecError, match="needs timestamps"):
        split_sequences(seqs, "temporal", 10)
    with pytest.raises(SidrecError, match="unknown split 'random'"):
        split_sequences(seqs, "random", 10)


def test_a_split_with_no_rows_is_an_error() -> None:
    seqs = _seqs([("u", [1, 2], None)])
    items = pl.DataFrame({"item_id": [0, 1, 2]})
    with pytest.raises(SidrecError, match="left no valid examples"):
        assemble(items, seqs, "loo", 20)
