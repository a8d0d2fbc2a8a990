"""Rewards on hand-computed groups: a hit, a miss, ties of the papers' rule, and the same
history with two different targets (the target comes from each row, never from a lookup)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sidrec.core.errors import SidrecError
from sidrec.rl.rewards import (
    check_rewards,
    combined,
    rank_penalty,
    ranking,
    rule,
    sasrec,
    semantic,
)

# discounts of ranks 0..3: 1, 1/log2(3), 1/2, 1/log2(5)
D = [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(5)]
Z = sum(D)


def test_rule_and_ranking_by_hand() -> None:
    beams = np.array([[7, 3, 9, 4], [5, 6, 8, 2]])
    target = np.array([9, 1])  # row 0: hit at rank 2; row 1: the target is absent
    assert rule(beams, target).tolist() == [[0, 0, 1, 0], [0, 0, 0, 0]]
    want = [[-D[0] / Z, -D[1] / Z, 1.0, -D[3] / Z], [0.0] * 4]
    assert np.allclose(ranking(beams, target), want)
    assert np.allclose(
        rank_penalty(beams, target), [[-D[0] / Z, -D[1] / Z, 0.0, -D[3] / Z], [0] * 4]
    )
    # a group where no beam hits gives no signal at all: zero reward everywhere
    assert not ranking(beams, target)[1].any()


def test_the_same_history_with_two_targets_scores_each_row_by_its_own() -> None:
    beams = np.array([[4, 2, 8], [4, 2, 8]])  # one history, so the same beams
    target = np.array([4, 8])  # two rows: the user bought 4 once and 8 another time
    assert rule(beams, target).tolist() == [[1, 0, 0], [0, 0, 1]]
    r = ranking(beams, target)
    z = 1 + 1 / math.log2(3) + 0.5
    assert np.allclose(r, [[1, -D[1] / z, -0.5 / z], [-1 / z, -D[1] / z, 1.0]])


def test_semantic_is_the_cosine_to_the_target() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    got = semantic(np.array([[0, 1, 2]]), np.array([2]), vectors)
    assert np.allclose(got, [[1 / math.sqrt(2), 1 / math.sqrt(2), 1.0]])


def test_weighted_combination_and_bad_names() -> None:
    beams, target = np.array([[1, 2]]), np.array([2])
    vectors = np.eye(3)
    out = combined({"rule": 2.0, "ranking": 0.0, "semantic": 0.5}, beams, target, vectors)
    assert set(out) == {"rule", "semantic", "total"}
    assert np.allclose(out["total"], [[0.0, 2.5]])
    with pytest.raises(SidrecError, match=r"unknown reward \['ndcg'\]; choose from"):
        check_rewards({"ndcg": 1.0}, True)
    with pytest.raises(SidrecError, match="semantic needs item embeddings"):
        check_rewards({"semantic": 1.0}, False)
    with pytest.raises(SidrecError, match="non-zero weight"):
        check_rewards({"rule": 0.0}, True)
    with pytest.raises(SidrecError, match="sasrec needs a trained SASRec"):
        check_rewards({"sasrec": 1.0}, True, have_sasrec=False)


def test_sasrec_is_the_groups_softmax_of_the_classic_scores() -> None:
    scores = np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, np.log(2.0), -50.0]])
    got = sasrec(np.array([[0, 1, 2, 3], [4, 5, 6, 7]]), np.array([0, 9]), scores)
    e = [math.e**2, 1.0, 2.0, math.e**-50]
    assert np.allclose(got, [[0.25] * 4, [v / sum(e) for v in e]])
    assert np.allclose(got.sum(1), 1.0)
    # weighted with the rule: the target's beam gets 1 on top of its SASRec share
    out = combined(
        {"rule": 1.0, "sasrec": 2.0}, np.array([[0, 1]]), np.array([1]), None, scores[:1, :2]
    )
    assert np.allclose(out["total"], [[1.0, 2.0]])


def test_the_sasrec_reward_scores_each_group_after_its_own_history() -> None:
    """Through the TRL reward function: completions arrive in any order within their group,
    and each group's beams are scored by the SASRec model after that row's history."""
    import torch

    from sidrec.core.sasrec_model import SASRec, score_items
    from sidrec.rl.train import reward_functions

    torch.manual_seed(0)
    model = SASRec(n_items=6, hidden=8, layers=1, heads=1, dropout=0.0, max_len=5).eval()
    item_of_sid = np.array([0, 1, 2, 3, 4, 5])
    (fn,) = reward_functions({"sasrec": 1.0}, 3, None, (model, 5, item_of_sid))
    assert fn.__name__ == "sasrec"
    histories = [[0, 1], [4, 2, 3]]
    beams = np.array([[5, 3, 1], [0, 2, 4]])
    # group 0 arrives in rank order 2, 0, 1; group 1 in order 1, 2, 0
    rank = [2, 0, 1, 1, 2, 0]
    sid = [beams[0, 2], beams[0, 0], beams[0, 1], beams[1, 1], beams[1, 2], beams[1, 0]]
    got = fn(
        prompts=[""] * 6,
        completions=[""] * 6,
        beam_rank=rank,
        beam_sid=sid,
        target=[3] * 3 + [0] * 3,
        history=[histories[0]] * 3 + [histories[1]] * 3,
    )
    want = sasrec(beams, np.array([3, 0]), score_items(model, histories, beams, 5))
    assert np.allclose(
        got, [want[0, 2], want[0, 0], want[0, 1], want[1, 1], want[1, 2], want[1, 0]]
    )
