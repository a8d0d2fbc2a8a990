"""SASRec's model: a history's prediction does not depend on its batch's padding, and the
model learns a next-item rule that needs attention to positions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sidrec.evaluate.sasrec import _windows, rank_items, train_epoch
from sidrec.sasrec_model import SASRec, pad_left


def test_padding_width_does_not_change_the_prediction() -> None:
    torch.manual_seed(0)
    model = SASRec(30, hidden=16, layers=2, heads=2, dropout=0.0, max_len=12).eval()
    history = [[3, 7, 1, 9, 4], [5, 2]]
    with torch.no_grad():
        last = [model(pad_left(history, w))[:, -1] for w in (5, 8, 12)]
    for other in last[1:]:
        torch.testing.assert_close(other, last[0], atol=1e-5, rtol=1e-5)


def test_learns_a_rule_that_needs_positions() -> None:
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
    model = SASRec(n, hidden=32, layers=2, heads=2, dropout=0.0, max_len=10)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    windows = _windows(seqs, 10)
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
