"""HR@K / NDCG@K against hand-computed values, and the two matching rules for shared SIDs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sidrec.core.errors import SidrecError
from sidrec.core.io import read_json
from sidrec.core.metrics import (
    cutoffs,
    drop_history,
    hr_ndcg,
    metric_interval,
    paired_difference,
    target_ranks,
    user_gains,
)
from sidrec.core.ranking import write_ranking


def test_ranks_and_metrics_by_hand() -> None:
    ranked = np.array([[7, 1, 2], [1, 2, 7], [4, 5, 6], [9, 7, 8]])
    targets = np.array([7, 7, 7, 8])
    ranks = target_ranks(ranked, targets)
    assert ranks.tolist() == [1, 3, 0, 3]  # rank 1, rank K, missing, rank K
    m = hr_ndcg(ranks, [1, 3])
    assert m["HR@1"] == 0.25 and m["NDCG@1"] == 0.25
    assert m["HR@3"] == 0.75
    assert m["NDCG@3"] == pytest.approx((1 + 2 * (1 / math.log2(4))) / 4)
    assert m["NDCG@3"] == pytest.approx(0.5)


def test_per_user_gains_average_to_the_metrics() -> None:
    ranks = np.array([1, 3, 0, 2, 11])
    hit, gain = user_gains(ranks, 10)
    assert hit.tolist() == [1, 1, 0, 1, 0]
    assert gain.tolist() == pytest.approx([1, 0.5, 0, 1 / math.log2(3), 0])
    m = hr_ndcg(ranks, [10])
    assert m["HR@10"] == hit.mean() and m["NDCG@10"] == pytest.approx(gain.mean())


def test_paired_difference_and_its_interval() -> None:
    rng = np.random.default_rng(0)
    b = rng.integers(0, 30, 4000)
    # A finds the target one place higher for every user B ranks 2..10: a sure gain
    a = np.where((b >= 2) & (b <= 10), b - 1, b)
    d = paired_difference(a, b, 10)["NDCG@10"]
    _, ga = user_gains(a, 10)
    _, gb = user_gains(b, 10)
    assert d["difference"] == pytest.approx(ga.mean() - gb.mean())
    assert 0 < d["ci95_low"] < d["difference"] < d["ci95_high"]
    assert paired_difference(a, b, 10)["HR@10"]["difference"] == 0  # same hits
    # the same model against itself: no difference, an interval of width 0 around it
    same = paired_difference(b, b, 10)["NDCG@10"]
    assert same == {"difference": 0.0, "ci95_low": 0.0, "ci95_high": 0.0}
    # two unrelated draws of the same quality: the interval covers 0
    c = rng.permutation(b)
    mixed = paired_difference(c, b, 10)["NDCG@10"]
    assert mixed["ci95_low"] < 0 < mixed["ci95_high"]
    with pytest.raises(SidrecError, match="same non-empty queries"):
        paired_difference(a[:3], b, 10)


def test_a_metrics_interval_covers_it_and_narrows_with_more_users() -> None:
    rng = np.random.default_rng(1)
    few, many = rng.integers(0, 30, 500), rng.integers(0, 30, 20000)
    for ranks in (few, many):
        m = hr_ndcg(ranks, [10])
        ci = metric_interval(ranks, 10)
        assert ci["HR@10"][0] < m["HR@10"] < ci["HR@10"][1]
        assert ci["NDCG@10"][0] < m["NDCG@10"] < ci["NDCG@10"][1]
    width = [metric_interval(r, 10)["HR@10"] for r in (few, many)]
    assert width[1][1] - width[1][0] < (width[0][1] - width[0][0]) / 3  # sqrt(40) ~ 6.3x


def test_dropping_history_items_keeps_order_and_fills_what_it_can() -> None:
    ranked = np.array([[5, 1, 7, 2, 9], [3, 4, 6, 8, 0]])
    scores = -np.arange(5.0)[None].repeat(2, 0)
    items, kept = drop_history(ranked, scores, [[1, 2, 7], [3, 4, 6, 8]], 3)
    assert items.tolist() == [[5, 9, -1], [0, -1, -1]]
    assert kept[0, :2].tolist() == [0.0, -4.0] and np.isinf(kept[0, 2])
    assert kept[1].tolist()[0] == -4.0


def test_cutoffs_fit_the_beams() -> None:
    assert cutoffs(20) == [1, 3, 5, 10, 20]
    assert cutoffs(50) == [1, 3, 5, 10, 20, 50]
    assert cutoffs(4) == [1, 3]


def test_shared_sid_counts_once_under_the_strict_rule(tmp_path: Path) -> None:
    """Items 0 and 2 share a SID (representative: item 0). A user whose target is item 2 and
    who is recommended that SID is a hit by SID equality, a miss by the strict rule."""
    rows = pl.DataFrame(
        {"user_id": ["u", "v"], "history": [[1], [1]], "target": [2, 0]},
        schema={"user_id": pl.String, "history": pl.List(pl.Int64), "target": pl.Int64},
    )
    sid = {0: "<a_0>", 1: "<a_1>", 2: "<a_0>"}
    items = np.array([[0, 1], [1, 0]])
    results = write_ranking(
        tmp_path,
        rows,
        items,
        np.array([[-0.1, -2.0], [-0.5, -0.9]]),
        {"method": "test"},
        sids=[[sid[i] for i in r] for r in items.tolist()],
        target_sids=[sid[2], sid[0]],
    )
    assert results["metrics"]["HR@1"] == 0.5 and results["metrics_strict"]["HR@1"] == 0.0
    assert results["metrics_strict"]["NDCG@1"] == 0.0 and results["ks"] == [1]
    pred = pl.read_parquet(tmp_path / "predictions.parquet")
    assert pred["rank"].to_list() == [1, 2]
    assert pred["rank_strict"].to_list() == [None, 2]
    assert read_json(tmp_path / "results.json") == results
