"""User sequences and the rows stages query: training windows over users' sequences (SFT's
``sequence`` format, SASRec) and the seeded sample of a split's rows that evaluation and
validation decode."""

from __future__ import annotations

import numpy as np
import polars as pl

from sidrec.core.dataset import SPLITS, Dataset
from sidrec.core.errors import SidrecError


def user_sequences(ds: Dataset) -> list[list[int]]:
    """Each user's training sequence: the items up to the last training target.

    Needs a split where every training example is a prefix of its user's sequence
    (leave-one-out); raises otherwise.
    """
    targets = ds.train.group_by("user_id", maintain_order=True).agg(pl.col("target"))
    seqs = ds.sequences
    items = dict(zip(seqs["user_id"].to_list(), seqs["item_ids"].to_list(), strict=True))
    out = []
    for user, tgts in zip(targets["user_id"].to_list(), targets["target"].to_list(), strict=True):
        seq = items.get(user, [])[: len(tgts) + 1]
        if sorted(seq[1:]) != sorted(tgts):
            raise SidrecError(
                "training on whole sequences needs every training example to be a prefix of "
                f"its user's sequence (a leave-one-out split); user {user!r} differs"
            )
        out.append(seq)
    return out


def sequence_windows(n_items: int, window: int) -> list[tuple[int, int, int]]:
    """Training windows over a sequence of ``n_items``: ``(start, first_loss, end)`` each.

    The loss covers items ``first_loss..end-1`` of each window, every item after the first
    exactly once; later windows keep ``window // 2`` items of context.

    Example:
        >>> sequence_windows(5, 50), sequence_windows(7, 4)
        ([(0, 1, 5)], [(0, 1, 4), (2, 4, 6), (4, 6, 7)])
    """
    if window < 2:
        raise SidrecError(f"a training window needs at least 2 items, got {window}")
    out = []
    start, covered = 0, 1
    while covered < n_items:
        end = min(start + window, n_items)
        out.append((start, covered, end))
        covered = end
        start = end - window // 2
    return out


def training_frequency(ds: Dataset) -> np.ndarray:
    """(n_items,) how often each item is a training target."""
    return np.bincount(ds.train["target"].to_numpy(), minlength=ds.items.height)


def query_rows(ds: Dataset, split: str, max_users: int, seed: int) -> pl.DataFrame:
    """The rows of ``split`` to evaluate: all, or a seeded sample of ``max_users`` (> 0)."""
    if split not in SPLITS[1:]:
        raise SidrecError(f"evaluation split must be valid or test, got {split!r}")
    rows = ds.split(split)
    if rows.height == 0:
        raise SidrecError(f"the dataset's {split} split is empty")
    if 0 < max_users < rows.height:
        keep = np.sort(np.random.default_rng(seed).choice(rows.height, max_users, replace=False))
        rows = rows[keep]
    return rows


def weighted_pick(n: int, weight: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``round(weight * n)`` of ``n`` rows: whole repeats, then a sample without
    repeats (a task's weight: 0 = none, 1 = all, 2.5 = all twice and half again).

    Example:
        >>> weighted_pick(3, 1.0, np.random.default_rng(0)).tolist()
        [0, 1, 2]
    """
    whole, frac = divmod(weight, 1.0)
    extra = np.sort(rng.choice(n, size=round(frac * n), replace=False)) if n else np.array([])
    return np.concatenate([np.tile(np.arange(n), int(whole)), extra]).astype(np.int64)
