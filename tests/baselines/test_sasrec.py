"""SASRec's model: a history's prediction does not depend on its batch's padding, and the
model learns a next-item rule that needs attention to positions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sidrec.baselines.sasrec import rank_items, train_epoch
from sidrec.core.errors import SidrecError
from sidrec.core.sasrec_model import MLP, Experts, SASRec, item_windows, pad_left

VARIANTS = {
    "base": {},
    "rms": {"norm": "rms"},
    "rope": {"position": "rope"},
    "gated": {"mlp": "gated"},
    "moe": {"moe_experts": 3, "moe_top_k": 2},
    "all": {"norm": "rms", "position": "rope", "mlp": "gated", "moe_experts": 2},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_padding_width_does_not_change_the_prediction(variant: str) -> None:
    torch.manual_seed(0)
    model = SASRec(30, 16, 2, 2, 0.0, 12, **VARIANTS[variant]).eval()
    history = [[3, 7, 1, 9, 4], [5, 2]]
    with torch.no_grad():
        last = [model(pad_left(history, w))[:, -1] for w in (5, 8, 12)]
    for other in last[1:]:
        torch.testing.assert_close(other, last[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_learns_a_rule_that_needs_positions(position: str) -> None:
    """Next item = (the one before the previous + 5) mod 12, in sequences of 3 to 6 items
    ranked after padding to 10: attention must find the right position, and positions must
    mean the same in short training batches as in full-width ranking (when they did not,
    accuracy stayed near 0.75)."""
    rng = np.random.default_rng(0)
    n = 12
    seqs = []
    for _ in range(400):
        a, b = (int(x) for x in rng.integers(0, n, 2))
        seq = [a, b]
        for _ in range(int(rng.integers(1, 5))):
            seq.append((seq[-2] + 5) % n)
        seqs.append(seq)
    torch.manual_seed(0)
    model = SASRec(n, hidden=32, layers=2, heads=2, dropout=0.0, max_len=10, position=position)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    windows = item_windows(seqs, 10)
    losses = [train_epoch(model, opt, windows, 64, rng) for _ in range(60)]
    assert losses[-1] < losses[0]
    histories = [s[:-1] for s in seqs[:200]]
    items, scores = rank_items(model, histories, 3, 10, 64)
    assert items.shape == scores.shape == (200, 3)
    assert np.all(np.diff(scores, axis=1) <= 0)
    hit = np.mean(items[:, 0] == np.array([s[-1] for s in seqs[:200]]))
    assert hit > 0.9, hit


def test_an_untrained_sasrec_starts_at_the_uniform_loss() -> None:
    """Weights ~ N(0, 0.02): every item scores near 0 before training, so the first loss is
    ln(n_items), not the ~30 that unit-variance embeddings give (which slowed training)."""
    torch.manual_seed(0)
    model = SASRec(5000, 64, 2, 2, 0.0, 50).eval()
    seq = pad_left(torch.randint(1, 5001, (64, 30)).tolist(), 50)
    with torch.no_grad():
        scores = model.scores(model(seq)[:, -1])
    loss = torch.nn.functional.cross_entropy(scores, torch.randint(0, 5000, (64,)))
    assert scores.std() < 0.3 and scores.abs().max() < 1.5  # unit-variance weights: std ~8
    assert float(loss) == pytest.approx(math.log(5000), abs=0.05)
    assert model.item.weight[0].abs().sum() == 0  # padding stays zero


def test_experts_route_each_token_to_top_k_and_balance_is_one_when_uniform() -> None:
    """A router of zeros gives every expert probability 1/n: with all n experts chosen the
    output is their mean and the load-balancing loss n x sum(1/n x 1/n) = 1."""
    torch.manual_seed(0)
    moe = Experts(hidden=8, kind="plain", dropout=0.0, n=4, top_k=4).eval()
    torch.nn.init.zeros_(moe.router.weight)
    x = torch.randn(2, 3, 8)
    keep = torch.tensor([[False, True, True], [True, True, True]])
    with torch.no_grad():
        out, loss = moe(x, keep)
    torch.testing.assert_close(out, sum(e(x) for e in moe.experts) / 4)
    assert float(loss) == pytest.approx(1.0)
    # every token the same, the router's logit 10 for expert 2 and 0 for the others, top 1:
    # every token goes to expert 2, whose mean probability is e^10 / (e^10 + 3)
    moe.top_k = 1
    x0 = torch.randn(8)
    with torch.no_grad():
        moe.router.weight[2] = 10 * x0 / x0.dot(x0)
    with torch.no_grad():
        out, skewed = moe(x0.expand(2, 3, 8), keep)
    assert float(skewed) == pytest.approx(4 * math.exp(10) / (math.exp(10) + 3), rel=1e-5)
    torch.testing.assert_close(out, moe.experts[2](x0.expand(2, 3, 8)))
    plain, gated = MLP(48, "plain", 0.0), MLP(48, "gated", 0.0)
    n_plain, n_gated = (sum(p.numel() for p in m.parameters()) for m in (plain, gated))
    assert abs(n_gated - n_plain) / n_plain < 0.01  # SwiGLU at 8/3 x hidden: about the same size


def test_variant_settings_are_checked() -> None:
    for kwargs, match in (
        ({"norm": "batch"}, "sasrec.norm"),
        ({"position": "rope", "heads": 4}, "sasrec.heads"),
        ({"heads": 5}, "sasrec.heads"),
        ({"moe_experts": 2, "moe_top_k": 3}, "moe_top_k"),
    ):
        args = {"hidden": 12, "heads": 2, **kwargs}
        with pytest.raises(SidrecError, match=match):
            SASRec(10, args.pop("hidden"), 1, args.pop("heads"), 0.0, 5, **args)
