"""``sidrec recommend``: from a model directory alone, the same top-K as ``sidrec evaluate``
for the same histories, item ids or source ids in, JSON lines out, unknown ids named."""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl
import pytest

from sidrec.app.cli import main
from sidrec.evaluate.generative import evaluate_model
from sidrec.serve.recommend import Recommender


@pytest.fixture(scope="module")
def evaluated(tiny_model: dict, tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("rec") / "eval"
    m = tiny_model
    evaluate_model(m["model"], m["data"], None, out, m["cfg"])
    return pl.read_parquet(out / "predictions.parquet")


def test_recommend_gives_evaluates_ranking(tiny_model: dict, evaluated: pl.DataFrame) -> None:
    rec = Recommender(tiny_model["model"])
    rows = evaluated.head(6)
    found = rec.recommend(rows["history"].to_list(), k=10, batch_size=4)
    items = pl.read_parquet(tiny_model["model"] / "items.parquet")
    for got, want in zip(found, rows["ranked_items"].to_list(), strict=True):
        assert [r["item_id"] for r in got] == want
        assert [r["score"] for r in got] == sorted((r["score"] for r in got), reverse=True)
        assert all(r["title"] == items["title"][r["item_id"]] for r in got)
        assert all(r["source_id"] == items["source_id"][r["item_id"]] for r in got)
    # a history longer than the model was trained on keeps its newest max_history items
    long = [i % 120 for i in range(45)]
    assert rec.recommend([long], 5) == rec.recommend([long[-rec.ranker.spec.max_history :]], 5)


def test_cli_history_and_json_lines(
    tiny_model: dict,
    evaluated: pl.DataFrame,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = str(tiny_model["model"])
    history = evaluated["history"][0].to_list()
    want = evaluated["ranked_items"][0].to_list()  # 10 beams, as evaluated
    assert (
        main(["recommend", "--model", model, "--k", "10", "--history", ",".join(map(str, history))])
        == 0
    )
    line = json.loads(capsys.readouterr().out)
    assert [r["item_id"] for r in line["recommendations"]] == want
    # source ids (strings) and item ids (numbers) may be mixed; one line out per line in
    items = pl.read_parquet(tiny_model["model"] / "items.parquet")
    sources = [items["source_id"][i] for i in history]
    mixed = [sources[0], *history[1:]]
    stdin = "\n".join(
        json.dumps({"user_id": u, "history": h}) for u, h in (("a", sources), ("b", mixed))
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin + "\n\n"))
    assert main(["recommend", "--model", model, "--k", "10"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["user_id"] for x in lines] == ["a", "b"]
    assert all([r["item_id"] for r in x["recommendations"]] == want for x in lines)


def test_unknown_ids_and_bad_lines_are_named(
    tiny_model: dict, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = str(tiny_model["model"])
    assert main(["recommend", "--model", model, "--history", "3,999,NOPE"]) == 2
    err = capsys.readouterr().err
    assert "unknown item ids [999, 'NOPE']" in err and "0..119" in err
    monkeypatch.setattr(
        "sys.stdin", io.StringIO('{"user_id": 1, "history": [1, 2]}\n{"history": 5}\n')
    )
    assert main(["recommend", "--model", model]) == 2
    assert "stdin, line 2: expected" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO('{"history": [true]}\n'))
    assert main(["recommend", "--model", model]) == 2
    assert "stdin, line 1: unknown item ids [True]" in capsys.readouterr().err
    assert main(["recommend", "--model", model, "--history", ","]) == 2
    assert "history is empty" in capsys.readouterr().err
    assert (
        main(["recommend", "--model", str(Path(model).parent / "nothing"), "--history", "1"]) == 2
    )
