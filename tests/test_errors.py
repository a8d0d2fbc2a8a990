"""Mistakes end with one line that names the file, the key or the row, exit status 2, and no
traceback, on every process of a multi-process run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import two_process_env

import sidrec.data.amazon18 as amazon18
from sidrec.app.cli import main

REPO = Path(__file__).resolve().parents[1]


def _fails(capsys: pytest.CaptureFixture[str], args: list[str], *needles: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("sidrec: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_bad_settings_and_files_are_named(
    tiny_model: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, model = str(tiny_model["data"]), tiny_model["model"]
    _fails(
        capsys,
        ["baseline", "sasrec", "--data", data, "--out", str(tmp_path / "s"), "sasrec.epochs=0"],
        "sasrec.epochs=0: must be >= 1",
    )
    evaluate = ["evaluate", "--model", str(model), "--data", data]
    _fails(
        capsys,
        [*evaluate, "--out", str(tmp_path / "e"), "evaluate.batch_size=0"],
        "evaluate.batch_size must be a number >= 1 or auto, got 0",
    )
    broken = tmp_path / "model"
    shutil.copytree(model, broken)
    (broken / "prompting.json").write_text('{"format": "prompt", "template": 3}')
    _fails(
        capsys,
        ["evaluate", "--model", str(broken), "--data", data, "--out", str(tmp_path / "e")],
        f"{broken / 'prompting.json'}: expected an object",
    )
    (broken / "prompting.json").write_text("{not json")
    _fails(
        capsys,
        ["recommend", "--model", str(broken), "--history", "1"],
        "prompting.json, line 1: invalid JSON",
    )
    npy = tmp_path / "emb.npy"
    npy.write_bytes(b"\x93NUMPY garbage")
    _fails(
        capsys,
        ["embed", "--data", data, "--out", str(tmp_path / "emb"), "--from-npy", str(npy)],
        f"{npy}: expected a .npy array file",
    )
    assert not (tmp_path / "emb").exists()


def test_a_failed_download_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(amazon18, "DOWNLOAD_URL", (tmp_path / "nowhere").as_uri())
    _fails(
        capsys,
        [
            "data",
            "amazon18",
            "--dataset",
            "Tiny",
            "--raw-dir",
            str(tmp_path / "raw"),
            "--download",
            "--out",
            str(tmp_path / "d"),
        ],
        "could not download",
        "fetch it by hand into",
    )
    assert not list((tmp_path / "raw").glob("*.part"))


def test_every_process_ends_with_the_main_process_error(tiny_model: dict, tmp_path: Path) -> None:
    """SFT into a complete output on two processes: the main process refuses, and the other
    one ends with the same message instead of waiting at a barrier."""
    cfg_file = tmp_path / "cfg.yaml"
    cfg = tiny_model["cfg"]
    settings = {k: cfg[k] for k in ("model", "sft", "swanlab", "convert")}
    settings["sft"] = {**settings["sft"], "per_device_batch_size": 8}
    cfg_file.write_text(yaml.safe_dump(settings))
    examples = tiny_model["model"].parent / "examples"
    env = two_process_env()
    run = subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "sft.sh"),
            str(cfg_file),
            "--examples",
            str(examples),
            "--out",
            str(tiny_model["model"]),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    assert run.stderr.count("already complete; pass --overwrite") == 2, run.stderr[-3000:]
