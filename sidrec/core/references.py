"""Two reference rankings every evaluation reports beside its model, on the same query rows,
so a figure always comes with what a trivial recommender gets:

- ``popularity``: the items most often a training target, for everyone;
- ``item_to_item``: the items that most often followed the history's last item in training
  (a training row's last history item -> its target), ties and the rest by popularity.

Both match items (not SIDs) and leave the history's items out when the model's evaluation
does (``evaluate.exclude_history``).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import sparse

from sidrec.core.dataset import Dataset
from sidrec.core.metrics import cutoffs, hr_ndcg, target_ranks
from sidrec.core.sequences import training_frequency

BATCH = 512


def transition_counts(ds: Dataset) -> sparse.csr_matrix:
    """(n_items, n_items) how often item j was the training target right after item i."""
    n = ds.items.height
    rows = ds.train.filter(pl.col("history").list.len() > 0)
    last = rows["history"].list.last().to_numpy()
    target = rows["target"].to_numpy()
    return sparse.csr_matrix((np.ones(len(last)), (last, target)), shape=(n, n))


def _top(scores: np.ndarray, histories: list[list[int]], k: int, exclude: bool) -> np.ndarray:
    """(B, k) the best-scored items of each row of ``scores`` (B, n_items), best first."""
    if exclude:
        for r, hist in enumerate(histories):
            scores[r, hist] = -np.inf
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    best = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-best, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    # fewer than k items left after the history: the rest of the list is empty (-1)
    top[np.take_along_axis(best, order, axis=1) == -np.inf] = -1
    return top


def reference_rankings(
    ds: Dataset, rows: pl.DataFrame, k: int, exclude_history: bool
) -> dict[str, np.ndarray]:
    """(N, k) top-k items of each query row in ``rows`` (N) by popularity and by item-to-item
    transitions."""
    freq = training_frequency(ds).astype(np.float64)
    # popularity breaks ties: below one count, so it never outranks a transition
    tie = freq / (freq.max() + 1)
    counts = transition_counts(ds)
    histories = rows["history"].to_list()
    k = min(k, ds.items.height)
    out: dict[str, list[np.ndarray]] = {"popularity": [], "item_to_item": []}
    for b in range(0, len(histories), BATCH):
        part = histories[b : b + BATCH]
        pop = np.tile(freq, (len(part), 1))
        out["popularity"].append(_top(pop, part, k, exclude_history))
        last = np.array([h[-1] if h else 0 for h in part])
        trans = counts[last].toarray() * np.array([bool(h) for h in part])[:, None] + tie
        out["item_to_item"].append(_top(trans, part, k, exclude_history))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def reference_metrics(
    ds: Dataset, rows: pl.DataFrame, k: int, exclude_history: bool
) -> dict[str, dict[str, float]]:
    """HR@K / NDCG@K of the popularity and item-to-item rankings of ``rows``, at the cutoffs
    an evaluation with ``k`` recommendations reports."""
    targets = rows["target"].to_numpy()
    ranked = reference_rankings(ds, rows, k, exclude_history)
    return {name: hr_ndcg(target_ranks(top, targets), cutoffs(k)) for name, top in ranked.items()}
