"""``sidrec evaluate`` on a tiny SFT model: real items only, consistent files, shards that
merge to the single-process answer, and SASRec on the same rows."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import TINY_SFT, two_process_env

from sidrec.app.cli import main
from sidrec.baselines.sasrec import train_sasrec
from sidrec.core.config import load_config
from sidrec.core.dataset import read_dataset
from sidrec.core.errors import SidrecError
from sidrec.core.io import read_json
from sidrec.core.ledger import read_ledger
from sidrec.core.metrics import hr_ndcg
from sidrec.core.sasrec_model import Experts, load_sasrec, score_items
from sidrec.core.sids import SidTable, read_sid_dir
from sidrec.data.stage import write_imported_sids
from sidrec.evaluate.generative import evaluate_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tiny_model: dict) -> dict:
    return tiny_model


def test_evaluate_ranks_real_items_and_writes_consistent_files(
    trained: dict, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    results = evaluate_model(trained["model"], trained["data"], trained["sid"], out, trained["cfg"])
    assert results["users"] == 40 and results["ks"] == [1, 3, 5, 10]
    assert results["num_beams"] == 10 and results["processes"] == 1
    assert set(results["metrics"]) == {f"{m}@{k}" for m in ("HR", "NDCG") for k in (1, 3, 5, 10)}
    pred = pl.read_parquet(out / "predictions.parquet")
    assert pred.columns == [
        "user_id", "history", "target", "ranked_items", "scores",
        "target_sid", "ranked_sids", "rank_strict", "rank",
    ]  # fmt: skip
    ds, _ = read_dataset(trained["data"])
    sids = read_sid_dir(trained["sid"]).sids
    test = ds.test.join(pred.select("user_id"), on="user_id", how="semi")
    assert sorted(pred["user_id"]) == sorted(test["user_id"])
    for row in pred.iter_rows(named=True):
        assert len(set(row["ranked_items"])) == 10
        assert all(0 <= i < ds.items.height for i in row["ranked_items"])
        assert row["ranked_sids"] == [sids[i] for i in row["ranked_items"]]
        assert row["scores"] == sorted(row["scores"], reverse=True)
        want = (
            row["ranked_items"].index(row["target"]) + 1
            if row["target"] in row["ranked_items"]
            else None
        )
        assert row["rank"] == want == row["rank_strict"]  # no shared SIDs here
    ranks = pred["rank"].fill_null(0).to_numpy()
    assert results["metrics"] == hr_ndcg(ranks, results["ks"])
    assert read_json(out / "manifest.json")["results"] == results
    # the same seed and model give the same answers
    again = evaluate_model(
        trained["model"], trained["data"], trained["sid"], tmp_path / "again", trained["cfg"]
    )
    assert again["metrics"] == results["metrics"]
    # throughput and memory are recorded; batch_size=auto picks a size and ranks the same
    assert results["users_per_second"] > 0 and results["peak_memory_mb"] > 0
    assert results["batch_size"] == trained["cfg"]["evaluate"]["batch_size"]
    assert not results["batch_size_auto"] and results["head"] == "restricted"  # the default
    cfg = trained["cfg"]
    auto = {**cfg, "evaluate": {**cfg["evaluate"], "batch_size": "auto"}}
    picked = evaluate_model(trained["model"], trained["data"], None, tmp_path / "auto", auto)
    assert picked["batch_size_auto"] and picked["batch_size"] == 40  # all 40 fit in 10 s
    ranked = pl.read_parquet(tmp_path / "auto" / "predictions.parquet")["ranked_items"]
    assert ranked.to_list() == pred["ranked_items"].to_list()
    bad = {**cfg, "evaluate": {**cfg["evaluate"], "batch_size": 0}}
    with pytest.raises(SidrecError, match="batch_size must be a number >= 1 or auto, got 0"):
        evaluate_model(trained["model"], trained["data"], None, tmp_path / "bad", bad)


def test_cli_refuses_to_overwrite_and_checks_the_sids(
    trained: dict, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    args = ["evaluate", "--model", str(trained["model"]), "--data", str(trained["data"])]
    args += ["--num-beams", "5", *TINY_SFT, f"output_root={tmp_path}"]
    out = tmp_path / "e"
    assert main([*args, "--sid", str(trained["sid"]), "--out", str(out)]) == 0
    assert read_json(out / "results.json")["ks"] == [1, 3, 5]
    assert main([*args, "--sid", str(trained["sid"]), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # SIDs of the same size but not the model's are refused, naming both
    codes = read_sid_dir(trained["sid"]).codes
    other = tmp_path / "sid"
    write_imported_sids(other, SidTable(codes[1:] + codes[:1], [8] * 3), "t", {})
    assert main([*args, "--sid", str(other), "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert f"--sid {other} (SID hash" in err and str(trained["model"] / "sids") in err
    assert not (tmp_path / "f").exists()
    # the same SIDs elsewhere are accepted; with no --sid the bundled ones are used
    same = tmp_path / "same"
    write_imported_sids(same, SidTable(codes, [8] * 3), "t", {})
    assert main([*args, "--sid", str(same), "--out", str(tmp_path / "g")]) == 0
    assert main([*args, "--out", str(tmp_path / "h")]) == 0
    manifest = read_json(tmp_path / "h" / "manifest.json")
    assert manifest["inputs"]["sid"] == str(trained["model"] / "sids")
    assert (
        read_json(tmp_path / "h" / "results.json")["metrics"]
        == read_json(tmp_path / "g" / "results.json")["metrics"]
    )
    # each finished evaluation, and only those, is a row of the experiment ledger
    ledger = read_ledger(tmp_path / "experiments.csv")
    assert ledger["output"].to_list() == [str(tmp_path / d) for d in ("e", "g", "h")]
    assert ledger["model"].to_list() == ["sft:tiny-qwen2"] * 3
    assert ledger["sid_method"].to_list() == ["sid.import"] * 3
    assert ledger["NDCG@5"][2] == read_json(tmp_path / "h" / "results.json")["metrics"]["NDCG@5"]
    assert ledger["NDCG@10"].is_null().all()  # 5 beams: no K = 10
    assert ledger["config_hash"].n_unique() == 1 and ledger["split"][0] == "test"


def test_two_processes_decode_shards_that_merge_to_the_same_answer(
    trained: dict, tmp_path: Path
) -> None:
    """scripts/evaluate.sh with torchrun: two CPU processes each decode half of the users."""
    cfg_file = tmp_path / "cfg.yaml"
    settings = {"evaluate": trained["cfg"]["evaluate"], "output_root": str(tmp_path)}
    cfg_file.write_text(yaml.safe_dump(settings))
    env = two_process_env()
    args = ["--model", trained["model"], "--data", trained["data"], "--sid", trained["sid"]]
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "evaluate.sh"), str(cfg_file), *map(str, args)]
        + ["--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    two = read_json(tmp_path / "two" / "results.json")
    paths = trained["model"], trained["data"], trained["sid"]
    one = evaluate_model(*paths, tmp_path / "one", trained["cfg"])
    assert two["processes"] == 2 and two["users"] == one["users"] == 40
    assert two["metrics"] == one["metrics"]
    a = pl.read_parquet(tmp_path / "two" / "predictions.parquet")
    b = pl.read_parquet(tmp_path / "one" / "predictions.parquet")
    assert a["ranked_items"].to_list() == b["ranked_items"].to_list()


def test_sasrec_trains_and_reports_in_the_same_form(trained: dict, tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "sasrec.hidden=16",
            "sasrec.heads=1",
            "sasrec.epochs=4",
            "sasrec.patience=0",
            "sasrec.top_k=20",
            "evaluate.max_users=40",
            f"output_root={tmp_path}",
        ],
    )
    results = train_sasrec(trained["data"], tmp_path / "sasrec", cfg)
    assert results["method"] == "sasrec" and results["users"] == 40
    assert results["ks"] == [1, 3, 5, 10, 20] and results["epochs_run"] == 4
    log = read_json(tmp_path / "sasrec" / "train_log.json")
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    pred = pl.read_parquet(tmp_path / "sasrec" / "predictions.parquet")
    ds, _ = read_dataset(trained["data"])
    items = np.array(pred["ranked_items"].to_list())
    assert items.shape == (40, 20) and items.min() >= 0 and items.max() < ds.items.height
    assert all(len(set(r)) == 20 for r in items.tolist())
    assert results["metrics"] == hr_ndcg(pred["rank"].fill_null(0).to_numpy(), results["ks"])
    # the evaluated users are the ones sidrec evaluate samples with the same seed
    gen = evaluate_model(
        trained["model"], trained["data"], trained["sid"], tmp_path / "gen", trained["cfg"]
    )
    gen_users = pl.read_parquet(tmp_path / "gen" / "predictions.parquet")["user_id"]
    assert pred["user_id"].to_list() == gen_users.to_list()
    assert gen["users"] == results["users"]
    ledger = read_ledger(tmp_path / "experiments.csv")
    assert ledger["method"].to_list() == ["sasrec"] and ledger["model"][0] == "sasrec"
    assert ledger["HR@20"][0] == results["metrics"]["HR@20"] and ledger["HR@50"][0] is None


def test_history_items_can_be_left_out_of_both_rankings(trained: dict, tmp_path: Path) -> None:
    """evaluate.exclude_history (RecBole's protocol): no user is recommended an item of their
    own history, by the generative model or by SASRec; the unfiltered figures stay beside."""
    ds, _ = read_dataset(trained["data"])
    cfg = load_config(
        None,
        [
            *TINY_SFT,
            "evaluate.exclude_history=true",
            f"output_root={tmp_path}",
            "sasrec.hidden=16",
            "sasrec.heads=1",
            "sasrec.epochs=2",
            "sasrec.top_k=20",
        ],
    )
    gen = evaluate_model(trained["model"], trained["data"], trained["sid"], tmp_path / "g", cfg)
    sas = train_sasrec(trained["data"], tmp_path / "s", cfg)
    longest = int(ds.test["history"].list.len().max())
    assert gen["beams_decoded"] == 10 + longest and gen["exclude_history"]
    for out, results, k in ((tmp_path / "g", gen, 10), (tmp_path / "s", sas, 20)):
        pred = pl.read_parquet(out / "predictions.parquet")
        pairs = zip(pred["history"].to_list(), pred["ranked_items"].to_list(), strict=True)
        for hist, ranked in pairs:
            assert len(ranked) == k and not set(hist) & set(ranked)
            assert len(set(ranked)) == k  # enough items were decoded to fill every list
        assert set(results["metrics_with_history"]) == set(results["metrics"])
        assert results["metrics"] == hr_ndcg(pred["rank"].fill_null(0).to_numpy(), results["ks"])


def test_a_sasrec_variant_trains_and_reloads(trained: dict, tmp_path: Path) -> None:
    """RMSNorm, rotary positions, SwiGLU experts: trained, saved, and read back by the RL
    reward's loader with the same scores; weights of another layout are refused."""
    variant = ["sasrec.norm=rms", "sasrec.position=rope", "sasrec.mlp=gated"]
    variant += ["sasrec.moe_experts=2", "sasrec.moe_top_k=1"]
    tiny = ["sasrec.hidden=16", "sasrec.heads=2", "sasrec.epochs=2", "sasrec.top_k=10"]
    cfg = load_config(None, [*tiny, *variant, "evaluate.max_users=20", f"output_root={tmp_path}"])
    results = train_sasrec(trained["data"], tmp_path / "v", cfg)
    assert results["epochs_run"] == 2 and 0 <= results["metrics"]["HR@10"] <= 1
    ds, _ = read_dataset(trained["data"])
    model, max_len = load_sasrec(tmp_path / "v", ds.items.height)
    assert isinstance(model.blocks[0].ffn, Experts) and model.position is None
    pred = pl.read_parquet(tmp_path / "v" / "predictions.parquet")
    hist, top = pred["history"].to_list()[:5], np.array(pred["ranked_items"].to_list())[:5]
    got = score_items(model, hist, top, max_len)
    want = np.array(pred["scores"].to_list())[:5]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the same weights under a config that says one dense MLP: another layout
    (tmp_path / "v" / "config.yaml").write_text(
        (tmp_path / "v" / "config.yaml").read_text().replace("moe_experts: 2", "moe_experts: 0")
    )
    with pytest.raises(SidrecError, match="another SASRec layout"):
        load_sasrec(tmp_path / "v", ds.items.height)
