"""The stepwise scripts (scripts/*.sh): each answers --help, and together they run the workflow
on a small synthetic catalog with MiniOneRec's flag names, printing each sidrec command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import TINY_QWEN2, write_amazon18_raw

from sidrec.core.config import load_config, plain
from sidrec.core.io import is_complete, read_json

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
USER_SCRIPTS = sorted(p for p in SCRIPTS.glob("*.sh") if not p.name.startswith("_"))


def _env() -> dict[str, str]:
    """This interpreter's environment first on PATH; one CPU process through torchrun."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "LAUNCHER": "torchrun",
        "NPROC": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "SWANLAB_MODE": "disabled",
    }


def _script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["bash", str(SCRIPTS / name), *args], cwd=cwd, env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
    return done


def test_every_script_answers_help(tmp_path: Path) -> None:
    names = {p.name for p in USER_SCRIPTS}
    for want in (
        "amazon18_data_process.sh",
        "amazon_text2emb.sh",
        "rqkmeans_faiss.sh",
        "rqkmeans_constrained.sh",
        "rqkmeans_plus.sh",
        "rqvae.sh",
        "generate_indices_plus.sh",
        "convert_dataset.sh",
        "sft.sh",
        "sft_single_gpu_swanlab.sh",
        "rl.sh",
        "evaluate.sh",
        "analyze_badcase.sh",
        "optimization_strategies.sh",
        "compare_results.sh",
        "dashboard.sh",
    ):
        assert want in names
    for path in USER_SCRIPTS:
        done = _script(path.name, "--help", cwd=tmp_path)
        assert "Usage: bash scripts/" in done.stdout, path.name
        assert not (tmp_path / "outputs").exists()  # --help does nothing else
    bad = subprocess.run(
        ["bash", str(SCRIPTS / "rl.sh"), "--reward_type", "fancy"],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--reward_type must be" in bad.stderr
    bad = subprocess.run(
        ["bash", str(SCRIPTS / "convert_dataset.sh"), "--colour"],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown option --colour" in bad.stderr


def test_the_workflow_runs_script_by_script(tmp_path: Path) -> None:
    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        [
            *TINY_QWEN2,
            f"model.cache_dir={tmp_path / 'models'}",
            f"embed.cache_dir={tmp_path / 'emb-cache'}",
            "embed.max_seq_length=32",
            "sid.epochs=2",
            "convert.max_valid_examples=16",
            "sft.max_steps=4",
            "sft.eval_steps=2",
            "evaluate.max_users=24",
            "rl.max_steps=2",
            "rl.eval_steps=2",
            "rl.save_steps=2",
            "rl.valid_users=8",
            "rl.logging_steps=1",
        ],
    )
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(plain(cfg), sort_keys=False))
    run = tmp_path / "outputs" / "shop"
    subprocess.run(
        [sys.executable, "-m", "sidrec.app.cli", "data", "synth", "--out", str(run / "data")]
        + ["--n-items", "150", "--n-users", "120"],
        check=True,
        capture_output=True,
    )
    (tmp_path / "raw").mkdir()
    write_amazon18_raw(tmp_path / "raw", "Toy")
    done = _script(
        "amazon18_data_process.sh",
        *("--dataset", "Toy", "--input_path", str(tmp_path / "raw"), "--user_k", "3"),
        *("--item_k", "3", "--st_year", "2016", "--st_month", "10"),
        cwd=tmp_path,
    )
    assert "+ " in done.stderr and "data amazon18 --dataset Toy" in done.stderr
    assert read_json(tmp_path / "outputs" / "Toy" / "data" / "manifest.json")["counts"]["items"]
    shop = ("--dataset", "shop")
    _script(
        "amazon_text2emb.sh",
        *shop,
        *("--plm_checkpoint", "all-minilm-l6-v2", "--config", str(profile)),
        cwd=tmp_path,
    )
    assert is_complete(run / "embeddings")
    for script in ("rqkmeans_faiss.sh", "rqkmeans_plus.sh", "rqvae.sh", "rqkmeans_constrained.sh"):
        done = _script(
            script,
            *("--root", str(run), "--codebook_size", "8", "--config", str(profile)),
            "--overwrite",
            cwd=tmp_path,
        )
        method = yaml.safe_load((run / "sid" / "config.yaml").read_text())["method"]
        assert f"--method {method}" in done.stderr and "collision rate" in done.stdout
    _script("generate_indices_plus.sh", *shop, cwd=tmp_path)
    assert (run / "minionerec" / "index").is_dir()
    _script("convert_dataset.sh", *shop, "--config", str(profile), cwd=tmp_path)
    assert is_complete(run / "examples")
    tiny_batch = ("--batch_size", "16", "--micro_batch_size", "16", "--learning_rate", "0.003")
    done = _script("sft.sh", str(profile), "--category", "shop", *tiny_batch, cwd=tmp_path)
    assert "torchrun --nproc_per_node 1 -m sidrec.app.cli sft" in done.stderr
    assert read_json(run / "sft" / "manifest.json")["counts"]["steps"] == 4
    sft_cfg = yaml.safe_load((run / "sft" / "config.yaml").read_text())
    assert sft_cfg["sft"]["global_batch_size"] == 16 and sft_cfg["sft"]["learning_rate"] == 0.003
    _script(
        "sft_single_gpu_swanlab.sh",
        str(profile),
        *("--category", "shop", "--output_dir", str(run / "sft_swanlab")),
        cwd=tmp_path,
    )
    assert is_complete(run / "sft_swanlab")
    _script(
        "evaluate.sh",
        str(profile),
        *("--category", "shop", "--base_model", str(run / "sft"), "--num_beams", "10"),
        cwd=tmp_path,
    )
    assert read_json(run / "evaluate" / "results.json")["num_beams"] == 10
    _script(
        "rl.sh",
        str(profile),
        *("--category", "shop", "--model_path", str(run / "sft"), "--num_generations", "4"),
        *("--train_batch_size", "8", "--sample_train", "True", "--sample_size", "16"),
        *("--reward_type", "rule", "--beam_search", "True", "--num_train_epochs", "1"),
        cwd=tmp_path,
    )
    rl_cfg = yaml.safe_load((run / "rl" / "config.yaml").read_text())
    assert rl_cfg["rl"]["rewards"]["rule"] == 1 and rl_cfg["rl"]["rewards"]["ranking"] == 0
    assert rl_cfg["rl"]["sample_size"] == 16 and rl_cfg["rl"]["num_generations"] == 4
    _script(
        "evaluate.sh",
        str(profile),
        *("--category", "shop", "--base_model", str(run / "rl")),
        *("--output_dir", str(run / "evaluate_rl")),
        cwd=tmp_path,
    )
    done = _script(
        "analyze_badcase.sh",
        *("--category", "shop", "--model", str(run / "rl"), "--top_k", "5"),
        cwd=tmp_path,
    )
    assert "--eval outputs/shop/evaluate_rl --out outputs/shop/analyze" in done.stderr
    report = read_json(run / "analyze" / "badcase_report.json")
    assert report["top_k"] == 5 and "recency" in report["segments"]  # embeddings were found
    _script(
        "optimization_strategies.sh",
        *("--badcase_report", str(run / "analyze" / "badcase_report.json")),
        *("--output_config", str(run / "suggested.yaml"), "--auto_recommend"),
        cwd=tmp_path,
    )
    assert yaml.safe_load((run / "suggested.yaml").read_text())["suggested_for"]
    done = _script(
        "compare_results.sh",
        *("--baseline", str(run / "evaluate"), "--optimized", str(run / "evaluate_rl")),
        *("--output_dir", str(run / "compare")),
        cwd=tmp_path,
    )
    assert "HR@10" in done.stdout and (run / "compare" / "comparison.png").is_file()
