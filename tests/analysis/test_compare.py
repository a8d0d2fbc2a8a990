"""``sidrec compare`` on hand-made evaluations, and the experiment ledger it ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sidrec.analysis.compare import compare, format_comparison, rank_ledger
from sidrec.app.cli import main
from sidrec.core.errors import InputError, SidrecError
from sidrec.core.io import read_json
from sidrec.core.ledger import COLUMNS, append_experiment, read_ledger
from sidrec.core.ranking import write_ranking


def _evaluation(out: Path, ranks: list[int], users: list[str] | None = None) -> Path:
    """An evaluation of len(ranks) users ranking 10 items, the target at ``ranks`` (0 =
    absent)."""
    n = len(ranks)
    users = users or [f"u{i}" for i in range(n)]
    rows = pl.DataFrame(
        {"user_id": users, "history": [[1]] * n, "target": [100] * n},
        schema={"user_id": pl.String, "history": pl.List(pl.Int64), "target": pl.Int64},
    )
    items = np.tile(np.arange(10), (n, 1))
    for r, rank in enumerate(ranks):
        if rank:
            items[r, rank - 1] = 100
    out.mkdir(parents=True)
    write_ranking(out, rows, items, -np.arange(10.0)[None].repeat(n, 0), {"method": "t"})
    return out


def test_deltas_and_a_paired_interval_on_known_ranks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 11, 3000)  # 0 = not among the 10
    better = np.where((base >= 2) & (base <= 10), 1, base)  # every hit moves to rank 1
    a = _evaluation(tmp_path / "base" / "evaluate", base.tolist())
    b = _evaluation(tmp_path / "new" / "evaluate", better.tolist())
    result = compare([a, b / "results.json"], tmp_path / "cmp")
    run = result["runs"][0]
    assert result["baseline"] == "base/evaluate" and run["run"] == "new/evaluate"
    want_a = read_json(a / "results.json")["metrics"]
    want_b = read_json(b / "results.json")["metrics"]
    for name in ("HR@1", "NDCG@10"):
        m = run["metrics"][name]
        assert m["baseline"] == want_a[name] and m["run"] == want_b[name]
        assert m["delta"] == pytest.approx(want_b[name] - want_a[name])
        assert m["relative"] == pytest.approx(m["delta"] / want_a[name])
    assert run["paired"]["NDCG@10"]["significant"] and run["paired"]["HR@1"]["significant"]
    assert run["paired"]["HR@10"]["difference"] == 0 and not run["paired"]["HR@10"]["significant"]
    assert run["paired"]["NDCG@10"]["difference"] == pytest.approx(
        run["metrics"]["NDCG@10"]["delta"]
    )
    assert read_json(tmp_path / "cmp" / "comparison.json") == result
    assert (tmp_path / "cmp" / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = format_comparison(result)
    assert "NDCG@10" in text and "*" in text.splitlines()[-1]


def test_different_users_get_no_paired_test(tmp_path: Path) -> None:
    a = _evaluation(tmp_path / "a", [1, 0, 2])
    b = _evaluation(tmp_path / "b", [1, 0, 2], users=["x", "y", "z"])
    run = compare([a, b])["runs"][0]
    assert run["paired"] == "the runs ranked different users"
    assert run["metrics"]["HR@1"]["delta"] == 0
    (b / "predictions.parquet").unlink()
    assert compare([a, b])["runs"][0]["paired"].startswith("no predictions.parquet")


def test_bad_runs_are_named(tmp_path: Path) -> None:
    with pytest.raises(SidrecError, match="a baseline and at least one other"):
        compare([tmp_path])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text('{"users": 3}')
    a = _evaluation(tmp_path / "a", [1, 0, 2])
    with pytest.raises(InputError, match=r"bad/results.json: has no `metrics`"):
        compare([a, bad])
    with pytest.raises(InputError, match="does not exist"):
        compare([a, tmp_path / "missing"])
    pl.DataFrame({"user_id": ["u0"]}).write_parquet(a / "predictions.parquet")
    with pytest.raises(InputError, match=r"predictions.parquet: lacks the columns \['rank'\]"):
        compare([a, a])


def test_the_ledger_keeps_every_run_and_ranks_them(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    cfg = {"output_root": str(tmp_path), "seed": 1}
    for name, ndcg in (("a", 0.02), ("b", 0.05), ("c", None)):
        metrics = {} if ndcg is None else {"NDCG@10": ndcg, "HR@10": 2 * ndcg}
        append_experiment(cfg, {"run_name": name, "users": 10, **metrics})
    ledger = read_ledger(tmp_path / "experiments.csv")
    assert ledger.columns == COLUMNS and ledger.height == 3
    assert ledger["run_name"].to_list() == ["a", "b", "c"]
    assert ledger["config_hash"].n_unique() == 1
    ranked = rank_ledger(tmp_path / "experiments.csv", "NDCG@10", top=2)
    assert ranked["run_name"].to_list() == ["b", "a"]
    with pytest.raises(SidrecError, match="--metric must be one of"):
        rank_ledger(tmp_path / "experiments.csv", "run_name")
    assert main(["compare", "--ledger", str(tmp_path / "experiments.csv")]) == 0
    out = capsys.readouterr().out
    assert out.index("0.05") < out.index("0.02")
    other = {**cfg, "seed": 2}
    append_experiment(other, {"run_name": "d"})
    assert read_ledger(tmp_path / "experiments.csv")["config_hash"].n_unique() == 2
    (tmp_path / "experiments.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="is not a sidrec experiment ledger"):
        append_experiment(cfg, {"run_name": "e"})
    with pytest.raises(InputError, match="no experiment ledger here"):
        read_ledger(tmp_path / "none.csv")


def test_the_command_prints_the_table_and_writes_the_chart(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    a = _evaluation(tmp_path / "a", [1, 0, 2, 0])
    b = _evaluation(tmp_path / "b", [1, 1, 2, 0])
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "HR@1" in out and "+0.2500" in out and "+100.0%" in out
    assert (tmp_path / "cmp" / "comparison.png").is_file()
    assert main(["compare", str(a), "--ledger"]) == 2
    assert "not both" in capsys.readouterr().err
