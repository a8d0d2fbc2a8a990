"""Split protocols: sliding windows over user sequences, then ``temporal`` or ``loo``.

- ``temporal`` (MiniOneRec): every window (history = up to ``max_history`` items before the
  target), all users together, sorted by target time and cut 8:1:1.
- ``loo`` (TIGER / LC-Rec / LETTER): per user, the last item is the test target, the one before
  it the validation target; training uses every prefix of the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import polars as pl

from sidrec.core.dataset import Dataset, examples_frame
from sidrec.core.errors import SidrecError

Row = tuple[str, list[int], int]


class SplitProtocol(str, Enum):
    TEMPORAL = "temporal"
    LOO = "loo"


def split_sequences(
    sequences: pl.DataFrame, protocol: str, max_history: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Split a ``sequences.parquet`` frame into train/valid/test example frames.

    Returns the three frames and counts of users too short to contribute to valid/test.

    Example:
        >>> seqs = pl.DataFrame({"user_id": ["u"], "item_ids": [[5, 6, 7, 8]],
        ...                      "timestamps": [[1, 2, 3, 4]]})
        >>> tr, va, te, _ = split_sequences(seqs, "loo", 20)
        >>> tr.rows(), va.rows(), te.rows()
        ([('u', [5], 6)], [('u', [5, 6], 7)], [('u', [5, 6, 7], 8)])
    """
    if max_history < 1:
        raise SidrecError(f"max_history must be at least 1, got {max_history}")
    users = sequences["user_id"].to_list()
    items = sequences["item_ids"].to_list()
    try:
        proto = SplitProtocol(protocol)
    except ValueError:
        raise SidrecError(f"unknown split {protocol!r}; expected temporal or loo") from None
    if proto is SplitProtocol.LOO:
        train, valid, test, short = _loo(users, items, max_history)
    else:
        times = sequences["timestamps"].to_list()
        if any(t is None for t in times):
            raise SidrecError("the temporal split needs timestamps for every sequence")
        train, valid, test, short = _temporal(users, items, times, max_history)
    frames = (examples_frame(train), examples_frame(valid), examples_frame(test))
    return (*frames, {"users_too_short_for_split": short})


def _windows(
    items: Sequence[int], start: int, stop: int, max_history: int
) -> list[tuple[list[int], int]]:
    return [(list(items[max(0, t - max_history) : t]), items[t]) for t in range(start, stop)]


def _loo(
    users: list[str], items: list[list[int]], max_history: int
) -> tuple[list[Row], list[Row], list[Row], int]:
    train: list[Row] = []
    valid: list[Row] = []
    test: list[Row] = []
    short = 0
    for user, seq in zip(users, items, strict=True):
        n = len(seq)
        if n < 3:
            short += 1
            train.extend((user, h, t) for h, t in _windows(seq, 1, n, max_history))
            continue
        train.extend((user, h, t) for h, t in _windows(seq, 1, n - 2, max_history))
        (vh, vt), (th, tt) = _windows(seq, n - 2, n, max_history)
        valid.append((user, vh, vt))
        test.append((user, th, tt))
    return train, valid, test, short


def _temporal(
    users: list[str], items: list[list[int]], times: list[list[int]], max_history: int
) -> tuple[list[Row], list[Row], list[Row], int]:
    windows: list[tuple[int, Row]] = []
    short = 0
    for user, seq, ts in zip(users, items, times, strict=True):
        if len(seq) < 2:
            short += 1
        for t, (h, target) in enumerate(_windows(seq, 1, len(seq), max_history), start=1):
            windows.append((ts[t], (user, h, target)))
    windows.sort(key=lambda w: w[0])  # stable: ties keep user order
    rows = [r for _, r in windows]
    n_train, n_valid = int(len(rows) * 0.8), int(len(rows) * 0.1)
    return rows[:n_train], rows[n_train : n_train + n_valid], rows[n_train + n_valid :], short


def assemble(
    items: pl.DataFrame, sequences: pl.DataFrame, protocol: str, max_history: int
) -> tuple[Dataset, dict[str, int]]:
    """A Dataset from items and sequences, split by ``protocol``; also returns skip counts."""
    train, valid, test, skipped = split_sequences(sequences, protocol, max_history)
    for name, frame in (("train", train), ("valid", valid), ("test", test)):
        if frame.height == 0:
            raise SidrecError(
                f"the {protocol} split left no {name} examples "
                f"({sequences.height} users); the data is too small or too filtered"
            )
    return Dataset(items, sequences, train, valid, test), skipped
