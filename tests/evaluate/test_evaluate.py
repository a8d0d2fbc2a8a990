"""``sidrec evaluate`` on a tiny SFT model: real items only, consistent files, shards that
merge to the single-process answer, and SASRec on the same rows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from sidrec.cli import main
from sidrec.config import load_config
from sidrec.data.dataset import read_dataset
from sidrec.data.stage import write_imported_sids
from sidrec.evaluate.generative import evaluate_model
from sidrec.evaluate.metrics import hr_ndcg
from sidrec.evaluate.sasrec import train_sasrec
from sidrec.io import read_json
from sidrec.sft.convert import convert
from sidrec.sft.train import train_sft
from sidrec.sids import SidTable, read_sid_dir

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "model.name_or_path=tiny-qwen2",
    "model.tiny_qwen2.hidden_size=32",
    "model.tiny_qwen2.intermediate_size=64",
    "model.tiny_qwen2.num_hidden_layers=1",
    "model.tiny_qwen2.num_attention_heads=2",
    "model.tiny_qwen2.num_key_value_heads=1",
    "swanlab.mode=disabled",
    "convert.max_valid_examples=32",
    "sft.max_steps=20",
    "sft.eval_steps=10",
    "sft.global_batch_size=16",
    "sft.per_device_batch_size=16",
    "sft.learning_rate=0.003",
    "evaluate.num_beams=10",
    "evaluate.batch_size=16",
    "evaluate.max_users=40",
]


@pytest.fixture(scope="module")
def trained(small_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("evaluate")
    cfg = load_config(None, [*TINY, f"model.cache_dir={root / 'models'}"])
    convert(small_run["data"], small_run["sid"], root / "examples", cfg)
    train_sft(root / "examples", root / "sft", cfg)
    return {**small_run, "model": root / "sft", "cfg": cfg}


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


def test_cli_refuses_to_overwrite_and_checks_the_sids(
    trained: dict, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    args = ["evaluate", "--model", str(trained["model"]), "--data", str(trained["data"])]
    args += ["--num-beams", "5", *TINY]
    out = tmp_path / "e"
    assert main([*args, "--sid", str(trained["sid"]), "--out", str(out)]) == 0
    assert read_json(out / "results.json")["ks"] == [1, 3, 5]
    assert main([*args, "--sid", str(trained["sid"]), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    short = tmp_path / "sid"
    write_imported_sids(short, SidTable(read_sid_dir(trained["sid"]).codes[:100], [8] * 3), "t", {})
    assert main([*args, "--sid", str(short), "--out", str(tmp_path / "f")]) == 2
    assert "100 SIDs for a dataset of 120 items" in capsys.readouterr().err


def test_two_processes_decode_shards_that_merge_to_the_same_answer(
    trained: dict, tmp_path: Path
) -> None:
    """scripts/evaluate.sh with torchrun: two CPU processes each decode half of the users."""
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump({"evaluate": trained["cfg"]["evaluate"]}))
    env = {
        **os.environ,
        "LAUNCHER": "torchrun",
        "NPROC": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
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
