"""``bash pipeline_0.5b.sh --profile demo --yes``, SIGKILLed from outside during SFT and then
during RL (the whole process group, as a lost machine or an OOM kill would), run again each
time: every re-run resumes the training from its newest checkpoint, and the third run only
reuses."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_one_shot import SCRIPT, one_shot_env, tiny_one_shot

from sidrec.core.io import read_json
from sidrec.core.training import work_dir

pytestmark = pytest.mark.faults

STEPS = [
    "sft.max_steps=60",
    "sft.eval_steps=5",
    "rl.max_steps=12",
    "rl.save_steps=2",
    "rl.eval_steps=0",
    "rl.sample_size=64",
    "rl.num_generations=4",
    "rl.per_device_batch_size=8",
]


def _run_until(args: list[str], checkpoint: Path, log: Path, timeout: float = 300) -> None:
    """Run the one-shot script and SIGKILL its process group once ``checkpoint`` is complete
    (the trainer writes its state file last)."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            args, env=one_shot_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + timeout
        while not (checkpoint / "trainer_state.json").is_file():
            if proc.poll() is not None:
                pytest.fail(f"it finished before {checkpoint} appeared:\n{log.read_text()[-3000:]}")
            if time.time() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"{checkpoint} did not appear")
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_killed_during_sft_and_rl_it_resumes(tmp_path: Path) -> None:
    args = ["bash", str(SCRIPT), "--profile", "demo", "--yes", *tiny_one_shot(tmp_path), *STEPS]
    run = tmp_path / "demo"
    _run_until(args, work_dir(run / "sft") / "checkpoints" / "checkpoint-5", tmp_path / "1.log")
    assert not (run / "sft").exists()
    _run_until(args, work_dir(run / "rl") / "checkpoints" / "checkpoint-2", tmp_path / "2.log")
    second = (tmp_path / "2.log").read_text()
    assert f"[sft] resuming {run / 'sft'}" in second
    sft = read_json(run / "sft" / "manifest.json")
    assert sft["resumed_from"] is not None and sft["counts"]["steps"] == 60
    done = subprocess.run(args, env=one_shot_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"[rl] resuming {run / 'rl'}" in done.stdout
    rl = read_json(run / "rl" / "manifest.json")
    assert rl["resumed_from"] is not None and rl["counts"]["steps"] == 12
    assert "stage        did" in done.stdout and "item-to-item" in done.stdout
    # a fourth run has nothing left to do
    again = subprocess.run(args, env=one_shot_env(), capture_output=True, text=True)
    assert again.returncode == 0 and "[sft] complete and unchanged" in again.stdout
    assert " built " not in again.stdout and " resumed " not in again.stdout
