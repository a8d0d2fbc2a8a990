"""The SwanLab dashboard: every run of an output root logs under ``<output_root>/swanlog``, and
``scripts/dashboard.sh`` serves them on 127.0.0.1 (the run's metrics over its HTTP API; in
headless Chromium, with ``make test-browser``, the run's page)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BROWSER_FLAGS, chromium

from sidrec.baselines.sasrec import train_sasrec
from sidrec.core.config import load_config
from sidrec.data.stage import synth

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "dashboard.sh"
EPOCHS = 3


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An output root where a small SASRec run logged ``EPOCHS`` epochs to SwanLab."""
    root = tmp_path_factory.mktemp("dashboard")
    synth(root / "data", n_items=150, n_users=120, seed=0)
    cfg = load_config(
        None,
        [
            f"output_root={root}",
            "run_name=shop",
            "swanlab.mode=local",
            f"sasrec.epochs={EPOCHS}",
            "sasrec.patience=0",
            "sasrec.hidden=16",
            "sasrec.layers=1",
            "evaluate.max_users=20",
        ],
    )
    train_sasrec(root / "data", root / "shop" / "sasrec", cfg)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def served(logged: Path) -> Iterator[str]:
    """``scripts/dashboard.sh`` on a free port over ``logged``'s runs; yields its URL."""
    port = _free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), str(logged / "swanlog"), str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                _get(f"{url}/api/v1/project")
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    out = proc.stdout.read() if proc.stdout else ""
                    pytest.fail(f"the dashboard did not start: {out[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _experiment(url: str, name: str) -> dict:
    project = _get(f"{url}/api/v1/project")["data"]
    found = [e for e in project["experiments"] if e["name"] == name]
    assert found, [e["name"] for e in project["experiments"]]
    return found[0]


def test_the_dashboard_serves_the_runs_metrics(logged: Path, served: str) -> None:
    assert (logged / "swanlog").is_dir() and not (logged / "shop" / "sasrec" / "swanlog").exists()
    run = _experiment(served, "shop-sasrec")
    tag = urllib.parse.quote("train/loss", safe="")
    points = _get(f"{served}/api/v1/experiment/{run['experiment_id']}/tag/{tag}")["data"]
    losses = [p["data"] for p in points["list"]]
    log = json.loads((logged / "shop" / "sasrec" / "train_log.json").read_text())
    assert len(losses) == EPOCHS
    assert losses == pytest.approx([r["train_loss"] for r in log], rel=1e-4)


def test_the_dashboard_script_needs_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "nothing")], capture_output=True, text=True
    )
    assert done.returncode == 2 and "no runs logged under" in done.stderr


@pytest.mark.browser
def test_the_dashboard_shows_the_run_in_chromium(served: str, tmp_path: Path) -> None:
    browser = chromium()
    run = _experiment(served, "shop-sasrec")
    page = f"{served}/experiment/{run['experiment_id']}"
    profile = ["--user-data-dir=" + str(tmp_path / "profile"), "--virtual-time-budget=15000"]
    dom = subprocess.run(
        [browser, *BROWSER_FLAGS, *profile, "--dump-dom", page],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "shop-sasrec" in dom.stdout and "train/loss" in dom.stdout
    shot = tmp_path / "dashboard.png"
    subprocess.run(
        [
            browser,
            *BROWSER_FLAGS,
            *profile,
            "--window-size=1400,1000",
            f"--screenshot={shot}",
            page,
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
