"""The popularity and item-to-item references every evaluation reports, on a hand-made case."""

import math

import numpy as np
import polars as pl

from sidrec.core.dataset import Dataset, examples_frame
from sidrec.core.references import reference_metrics, reference_rankings, transition_counts
from sidrec.core.sequences import training_frequency


def _dataset(test: list[tuple[str, list[int], int]]) -> Dataset:
    # targets: item 1 three times, 3 twice, 2 once, 0 never; transitions 0->1 x2, 1->2, 1->3,
    # 2->3, 3->1
    train = [("a", [0], 1), ("a", [0, 1], 2), ("b", [0], 1), ("b", [0, 1], 3)]
    train += [("c", [2], 3), ("c", [3], 1)]
    empty = examples_frame([])
    return Dataset(
        items=pl.DataFrame({"item_id": [0, 1, 2, 3]}),
        sequences=pl.DataFrame({"user_id": [], "item_ids": []}),
        train=examples_frame(train),
        valid=empty,
        test=examples_frame(test),
    )


def test_rankings_and_metrics_on_a_known_case() -> None:
    ds = _dataset([("a", [0, 1, 2], 3), ("b", [0, 1, 3], 2), ("d", [0], 1)])
    assert training_frequency(ds).tolist() == [0, 3, 1, 2]
    counts = transition_counts(ds).toarray()
    assert counts[0, 1] == 2 and counts[1].tolist() == [0, 0, 1, 1] and counts.sum() == 6
    ranked = reference_rankings(ds, ds.test, 4, exclude_history=False)
    assert ranked["popularity"].tolist() == [[1, 3, 2, 0]] * 3
    # the last item's successors first, then by popularity
    assert ranked["item_to_item"].tolist() == [[3, 1, 2, 0], [1, 3, 2, 0], [1, 3, 2, 0]]
    found = reference_metrics(ds, ds.test, 4, exclude_history=False)
    # popularity ranks the targets 2, 3, 1; item-to-item 1, 3, 1
    assert math.isclose(found["popularity"]["HR@1"], 1 / 3)
    want = (1 / math.log2(3) + 1 / 2 + 1) / 3
    assert math.isclose(found["popularity"]["NDCG@3"], want)
    assert math.isclose(found["item_to_item"]["HR@1"], 2 / 3)
    assert math.isclose(found["item_to_item"]["NDCG@3"], (1 + 1 / 2 + 1) / 3)


def test_history_left_out_and_short_lists() -> None:
    ds = _dataset([("a", [0, 1, 2], 3), ("b", [0, 1, 3], 2), ("e", [1, 3], 1)])
    ranked = reference_rankings(ds, ds.test, 2, exclude_history=True)
    assert ranked["popularity"].tolist() == [[3, -1], [2, -1], [2, 0]]
    assert ranked["item_to_item"].tolist() == [[3, -1], [2, -1], [2, 0]]
    found = reference_metrics(ds, ds.test, 2, exclude_history=True)
    # a and b hit at rank 1; e's target is in its history, left out: a miss
    assert math.isclose(found["popularity"]["HR@1"], 2 / 3)
    assert np.isclose(found["item_to_item"]["NDCG@1"], 2 / 3)
