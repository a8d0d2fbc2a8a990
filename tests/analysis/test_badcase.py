"""Each bad-case segment and the decoding-depth breakdown on hand-made cases with known answers,
and ``sidrec analyze`` end to end on an evaluation of the tiny model."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sidrec.analysis import badcase as bc
from sidrec.analysis.analyze import analyze
from sidrec.analysis.plots import PLOTS
from sidrec.app.cli import main
from sidrec.core.errors import InputError, SidrecError
from sidrec.core.io import read_json
from sidrec.evaluate.generative import evaluate_model


def test_bins_popularity_history_and_repeats() -> None:
    assert bc.bin_labels(np.array([0, 1, 4, 5, 99, 100]), (0, 1, 5, 20, 100)) == [
        "0",
        "1-4",
        "1-4",
        "5-19",
        "20-99",
        "100+",
    ]
    freq = np.array([0, 3, 50, 200])
    assert bc.popularity_segment(np.array([0, 1, 2, 3]), freq) == ["cold", "1-4", "20-99", "100+"]
    hist = [[1], [1, 2, 3, 4], list(range(25))]
    assert bc.history_segment(hist) == ["1-2 items", "3-5 items", "21+ items"]
    assert bc.repeat_segment(hist, np.array([1, 9, 24])) == ["repeat", "new", "repeat"]


def test_category_similarity_and_recency() -> None:
    cats = [["a"], ["b"], ["a", "c"], []]
    hist = [[0], [1], [1]]
    assert bc.category_segment(hist, np.array([2, 2, 3]), cats) == ["seen", "unseen", "no category"]
    # item vectors on a circle: 0 and 1 close, 2 at 90 degrees, 3 opposite 0
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=float)
    near = bc.similarity_segment([[1], [3], [1, 2]], np.array([0, 0, 0]), emb)
    assert near == ["near history", "far from history", "near history"]
    # the target resembles the last two items (recent) or the first two (older)
    recent = bc.recency_segment([[3, 3, 0, 1], [0, 1, 3, 3], [0, 1]], np.array([0, 0, 0]), emb)
    assert recent == ["recent", "older", "short history"]


def test_sid_segment_and_decoding_depth() -> None:
    codes = [[0, 0, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert bc.sid_segment(np.array([1, 0, 4, 3]), codes) == [
        "shared SID",
        "1-3 siblings",
        "0 siblings",
        "0 siblings",
    ]
    best = np.array([4, 3, 1, 2])
    targets = np.array([0, 0, 0, 1])
    # wrong first code, right a but wrong b, right prefix wrong last, same SID
    assert bc.decoding_depth(best, targets, codes).tolist() == [0, 1, 2, 3]


def test_gini_and_segment_table() -> None:
    assert bc.gini(np.array([5, 5, 5])) == 0.0
    assert bc.gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)
    rows = bc.segment_table(["a", "a", "b", "b", "b"], np.array([1, 0, 3, 0, 0]), 2)
    a = next(r for r in rows if r["label"] == "a")
    b = next(r for r in rows if r["label"] == "b")
    assert rows[0]["label"] == "b"  # the larger label first
    assert a["users"] == 2 and a["share_of_users"] == 0.4
    # failures: ranks 0 and 3 (beyond K = 2): users 1, 2, 3, 4
    assert a["failure_rate"] == 0.5 and a["share_of_failures"] == 0.25
    assert b["failure_rate"] == 1.0 and b["share_of_failures"] == 0.75
    assert a["HR@2"] == 0.5 and a["HR@2_rest"] == 0.0
    assert a["NDCG@2"] == 0.5 and b["NDCG@2_rest"] == pytest.approx(0.5)
    # bins keep their natural order, cold first
    binned = bc.segment_table(["20-99", "cold", "1-4", "100+", "1-4"], np.zeros(5, int), 2)
    assert [r["label"] for r in binned] == ["cold", "1-4", "20-99", "100+"]


@pytest.fixture(scope="module")
def evaluation(tiny_model: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("analyze") / "evaluate"
    evaluate_model(tiny_model["model"], tiny_model["data"], None, out, tiny_model["cfg"])
    return out


def test_analyze_writes_every_file_and_counts_right(evaluation: Path, tmp_path: Path) -> None:
    out = tmp_path / "analysis"
    report = analyze(evaluation, out, top_k=5)
    pred = pl.read_parquet(evaluation / "predictions.parquet")
    ranks = pred["rank"].fill_null(0).to_numpy()
    misses = int(((ranks == 0) | (ranks > 5)).sum())
    assert report["users"] == 40 and report["failures"] == misses
    assert report["failure_rate"] == pytest.approx(misses / 40)
    for name, rows in report["segments"].items():
        assert sum(r["users"] for r in rows) == 40, name
        assert sum(r["share_of_failures"] for r in rows) == pytest.approx(1.0), name
    # synthetic items have categories; no embeddings given
    assert set(report["segments"]) == {"popularity", "history_length", "repeat", "category", "sid"}
    assert set(report["segments_not_computed"]) == {"recency"}
    depth = report["decoding"]["misses_by_depth"]
    assert sum(depth.values()) == misses and list(depth)[0] == "wrong first code"
    where = report["decoding"]["target_position"]
    assert sum(where.values()) == 40 and where["top 5"] == 40 - misses
    rec = report["recommended"]
    assert 0 < rec["catalog_coverage"] <= 1 and 0 <= rec["gini_of_recommendation_counts"] < 1
    assert report["sid_quality"]["shared_sids"] == 0
    assert len(report["examples"]) == min(12, misses)
    lines = (out / "eval_results.jsonl").read_text().splitlines()
    assert len(lines) == 40
    first = json.loads(lines[0])
    assert len(first["ranked_items"]) == 5 and set(first["segments"]) == set(report["segments"])
    assert first["hit"] == (0 < (first["rank"] or 0) <= 5)
    assert read_json(out / "badcase_report.json") == report
    assert "failure rate" in (out / "summary_report.txt").read_text()
    for plot in PLOTS:
        assert (out / "visualizations" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(PLOTS) and "http" not in page
    for case in report["examples"]:  # every bad case is shown with its titles
        assert html.escape(case["target"]["title"]) in page


def test_analyze_with_embeddings_and_bad_input(
    evaluation: Path, tiny_model: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = pl.read_parquet(tiny_model["data"] / "items.parquet").height
    emb_dir = tmp_path / "emb"
    emb_dir.mkdir()
    np.save(emb_dir / "embeddings.npy", np.random.default_rng(0).normal(size=(n, 8)))
    args = ["analyze", "--eval", str(evaluation), "--embeddings", str(emb_dir)]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    report = read_json(tmp_path / "a" / "badcase_report.json")
    assert "recency" in report["segments"] and not report["segments_not_computed"]
    cos = report["recommended"]["miss_cosine_best_to_target"]
    assert cos is None or -1 <= cos <= 1
    assert "written:" in capsys.readouterr().out
    np.save(emb_dir / "embeddings.npy", np.zeros((n - 1, 8)))
    with pytest.raises(InputError, match=f"has {n - 1} rows, the dataset {n} items"):
        analyze(evaluation, tmp_path / "b", embeddings=emb_dir)
    with pytest.raises(SidrecError, match=r"--top-k must be in 1\.\.10"):
        analyze(evaluation, tmp_path / "b", top_k=11)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text((evaluation / "manifest.json").read_text())
    pl.read_parquet(evaluation / "predictions.parquet").drop("rank").write_parquet(
        broken / "predictions.parquet"
    )
    with pytest.raises(InputError, match=r"predictions.parquet: lacks the columns \['rank'\]"):
        analyze(broken, tmp_path / "b")
    pl.read_parquet(evaluation / "predictions.parquet").head(0).write_parquet(
        broken / "predictions.parquet"
    )
    with pytest.raises(InputError, match="has no rows"):
        analyze(broken, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    assert math.isfinite(report["failure_rate"])
