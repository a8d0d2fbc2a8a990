"""``pipeline_0.5b.sh``: the one-shot run answers its prompts in a real terminal (tmux), and is
refused bad options before any work."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_QWEN2, debian_tool, tiny_demo

from sidrec.core.io import is_complete

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "pipeline_0.5b.sh"


def one_shot_env() -> dict[str, str]:
    """This interpreter's environment first on PATH, so the script finds this sidrec."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def tiny_one_shot(root: Path) -> list[str]:
    """The demo profile shrunk to seconds, writing under ``root``."""
    return [*tiny_demo(root), *TINY_QWEN2, "sft.valid_users=16", "evaluate.max_users=16"]


def _wait_for(tmux: str, session: str, text: str, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        pane = subprocess.run(
            [tmux, "capture-pane", "-p", "-t", session, "-S", "-200"],
            capture_output=True,
            text=True,
        ).stdout
        if text in pane:
            return pane
        time.sleep(0.3)
    pytest.fail(f"{text!r} did not appear in the terminal:\n{pane}")


def test_the_prompts_are_answered_in_a_terminal(tmp_path: Path) -> None:
    tmux = debian_tool("tmux")
    session = f"sidrec-{os.getpid()}"
    args = " ".join(["bash", str(SCRIPT), "--profile", "demo", *tiny_one_shot(tmp_path)])
    env = one_shot_env()
    subprocess.run(
        [tmux, "new-session", "-d", "-s", session, "-x", "200", "-y", "50", f"{args}; sleep 30"],
        env=env,
        check=True,
        cwd=REPO,
    )
    try:
        _wait_for(tmux, session, "[data]")
        _wait_for(tmux, session, "run / skip / reuse / stop? [run]")
        subprocess.run([tmux, "send-keys", "-t", session, "run", "Enter"], check=True)
        _wait_for(tmux, session, "[embeddings]")
        _wait_for(tmux, session, "not built. run / skip / reuse / stop? [run]")
        # a wrong answer is asked again; Enter takes the default
        subprocess.run([tmux, "send-keys", "-t", session, "maybe", "Enter"], check=True)
        _wait_for(tmux, session, "answer one of run, skip, reuse, stop")
        subprocess.run([tmux, "send-keys", "-t", session, "", "Enter"], check=True)
        _wait_for(tmux, session, "[sid]")
        time.sleep(0.5)
        subprocess.run([tmux, "send-keys", "-t", session, "stop", "Enter"], check=True)
        pane = _wait_for(tmux, session, "stage        did")
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True)
    assert "ok    python" in pane  # preflight ran first
    assert "[sid] stopping here" in pane
    assert is_complete(tmp_path / "demo" / "data") and is_complete(tmp_path / "demo" / "embeddings")
    assert not (tmp_path / "demo" / "sid").exists()


def test_bad_options_are_refused_before_any_work(tmp_path: Path) -> None:
    for args, says in (
        (["--profile", "huge"], "--profile must be demo, qwen2.5-0.5b or custom"),
        (["--profile", "demo", "--dataset", "Toys"], "the demo profile is synthetic"),
        (["--profile", "custom", "--items", "x.csv"], "needs --interactions FILE and --items"),
        (["--profile", "demo", "--colour"], "unknown option --colour"),
    ):
        done = subprocess.run(
            ["bash", str(SCRIPT), *args, f"output_root={tmp_path}"],
            env=one_shot_env(),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2 and says in done.stderr, (args, done.stderr)
    assert not (tmp_path / "demo").exists()
