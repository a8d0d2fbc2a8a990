"""``sidrec sweep`` and ``sidrec export-submission``: precision, recall and F1 of the items shown
at each (top-K, threshold) equal hand-computed values, and the submission is ``user<TAB>item``
lines, deduplicated, best first, capped per user."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from sidrec.app.cli import main
from sidrec.core.errors import SidrecError
from sidrec.evaluate.sweep import export_submission, read_predictions, sweep

LOG = math.log


def _eval_dir(root: Path) -> Path:
    """Three rows: u1 (target 5) ranks [5, 6, 8] with probabilities [0.7, 0.2, 0.1]; u2
    (target 9) ranks [7, 9, -1] with [0.6, 0.4, -]; u1 again (target 8) ranks [8, 5, 6] with
    [0.5, 0.3, 0.2]. Scores are log-probabilities plus a per-row constant the softmax drops."""
    root.mkdir()
    pl.DataFrame(
        {
            "user_id": ["u1", "u2", "u1"],
            "target": [5, 9, 8],
            "ranked_items": [[5, 6, 8], [7, 9, -1], [8, 5, 6]],
            "scores": [
                [LOG(0.7) - 3, LOG(0.2) - 3, LOG(0.1) - 3],
                [LOG(0.6), LOG(0.4), float("-inf")],
                [LOG(0.5) + 1, LOG(0.3) + 1, LOG(0.2) + 1],
            ],
        }
    ).write_parquet(root / "predictions.parquet")
    return root


def test_sweep_equals_hand_computed_precision_recall_f1(tmp_path: Path) -> None:
    ev = _eval_dir(tmp_path / "eval")
    _, _, probs = read_predictions(ev)
    assert probs[1].tolist() == pytest.approx([0.6, 0.4, 0.0])
    rows = {(r["topk"], r["threshold"]): r for r in sweep(ev, [1, 2, 3], [0.0, 0.35])}
    # K=2, t=0.35: shown {5}, {7, 9}, {8}: 3 hits of 4 shown, 3 targets
    r = rows[(2, 0.35)]
    assert (r["precision"], r["recall"]) == pytest.approx((3 / 4, 1.0))
    assert r["f1"] == pytest.approx(2 * 0.75 / 1.75) and r["shown_per_user"] == pytest.approx(4 / 3)
    # K=1, t=0: the top item of each row: 5 (hit), 7, 8 (hit)
    r = rows[(1, 0.0)]
    assert (r["precision"], r["recall"], r["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    # K=3, t=0: every listed item (the -1 slot is never shown): 3 hits of 8 shown
    r = rows[(3, 0.0)]
    assert (r["precision"], r["recall"]) == pytest.approx((3 / 8, 1.0))
    assert r["users_shown_none"] == 0
    assert rows[(1, 0.35)]["users_shown_none"] == 0 and len(rows) == 6


def test_submission_lines_are_deduplicated_capped_and_best_first(tmp_path: Path) -> None:
    ev = _eval_dir(tmp_path / "eval")
    out = tmp_path / "sub" / "submission.tsv"
    counts = export_submission(ev, 0.15, 3, 10, out)
    # u1: 5 (0.7), 8 (0.5), 5 again (0.3, a duplicate), 6 (0.2 and 0.2 once); u2: 7, 9
    assert out.read_text().splitlines() == ["u1\t5", "u1\t8", "u1\t6", "u2\t7", "u2\t9"]
    assert counts == {"lines": 5, "users": 2}
    export_submission(ev, 0.15, 3, 2, out)
    assert out.read_text().splitlines() == ["u1\t5", "u1\t8", "u2\t7", "u2\t9"]
    args = ["export-submission", "--eval", str(ev), "--threshold", "0.45", "--topk", "2"]
    assert main([*args, "--out", str(out)]) == 0
    assert out.read_text() == "u1\t5\nu1\t8\nu2\t7\n"


def test_sweep_cli_and_out_of_range_lists(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ev = _eval_dir(tmp_path / "eval")
    assert (
        main(["sweep", "--eval", str(ev), "--topk-list", "1", "2", "--threshold-list", "0.3"]) == 0
    )
    table = capsys.readouterr().out
    assert "<- best F1" in table and (ev / "sweep.csv").exists()
    assert pl.read_csv(ev / "sweep.csv").height == 2
    for topks, thresholds, match in (
        ([0], [0.1], r"--topk-list values must be in 1..3 .* got \[0\]"),
        ([4], [0.1], r"in 1..3"),
        ([2], [1.5], r"--threshold-list values are normalised scores, in \[0, 1\]; got \[1.5\]"),
    ):
        with pytest.raises(SidrecError, match=match):
            sweep(ev, topks, thresholds)
    with pytest.raises(SidrecError, match="max-entries-per-user"):
        export_submission(ev, 0.1, 2, 0, tmp_path / "x.tsv")
    with pytest.raises(SidrecError, match="predictions"):
        sweep(tmp_path, [1], [0.1])
