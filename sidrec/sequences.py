"""User sequences and training windows over them: shared by every model that trains on whole
sequences (SFT's ``sequence`` format, SASRec)."""

from __future__ import annotations

import polars as pl

from sidrec.data.dataset import Dataset
from sidrec.errors import SidrecError


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
