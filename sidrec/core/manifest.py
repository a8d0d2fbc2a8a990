"""Run manifests: what an output directory was made from, with which settings, and when."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sidrec
from sidrec.core.config import plain
from sidrec.core.io import MANIFEST, is_complete, write_json, write_yaml

CONFIG_FILE = "config.yaml"
# What ``sidrec pipeline`` records in the manifest of each stage it runs (the config sections
# the stage depends on), so a later run can tell whether that output is still current.
PIPELINE_RECORD: ContextVar[dict[str, Any] | None] = ContextVar("pipeline_record", default=None)


@contextmanager
def recording(sections: dict[str, Any]) -> Iterator[None]:
    """Record ``sections`` (the config a stage depends on) in the manifests of the runs made
    inside the block, for :func:`sidrec.app.pipeline.stage_state` to compare later."""
    token = PIPELINE_RECORD.set(sections)
    try:
        yield
    finally:
        PIPELINE_RECORD.reset(token)


def run_id(path: str | Path) -> str | None:
    """The ``run_id`` of the complete sidrec output at ``path``; None for anything else."""
    p = Path(path)
    if not is_complete(p):
        return None
    try:
        return json.loads((p / MANIFEST).read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError):
        return None


def git_commit() -> str | None:
    """The commit of the sidrec checkout this code runs from; None for an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def machine() -> dict[str, Any]:
    """The machine a run or benchmark ran on: CPU count, GPU name (or None), Python."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpus": os.cpu_count(), "gpu": gpu, "python": platform.python_version()}


def peak_memory() -> dict[str, Any]:
    """The peak memory so far: on a GPU, what torch allocated since the last
    ``torch.cuda.reset_peak_memory_stats()``; on a CPU, the process's peak resident set."""
    import torch

    if torch.cuda.is_available():
        return {
            "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "peak_memory_of": "gpu_allocated",
        }
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    scale = 2**20 if platform.system() == "Darwin" else 2**10
    return {"peak_memory_mb": round(peak / scale, 1), "peak_memory_of": "process_rss"}


def measured(fn: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """``fn()`` and what it cost: ``seconds``, ``peak_mb`` (the highest memory in use while it
    ran: GPU memory allocated by torch, or the process's resident set sampled every
    millisecond on a CPU) and ``added_mb`` (that peak less what was in use before), in MiB."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        seconds, peak = time.perf_counter() - start, torch.cuda.max_memory_allocated()
    else:
        import psutil

        proc = psutil.Process()
        before = proc.memory_info().rss
        high = [before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                high[0] = max(high[0], proc.memory_info().rss)
                time.sleep(0.001)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        start = time.perf_counter()
        try:
            out = fn()
        finally:
            seconds = time.perf_counter() - start
            stop.set()
            thread.join()
        peak = max(high[0], proc.memory_info().rss)
    mib = 2**20
    return out, {
        "seconds": round(seconds, 4),
        "peak_mb": round(peak / mib, 1),
        "added_mb": round(max(0, peak - before) / mib, 1),
    }


def print_report(result: dict[str, Any], out: Path | None = None) -> None:
    """Print a benchmark's JSON result, and also write it to ``out`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.write_text(text + "\n")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


@dataclass
class Run:
    """One run of a stage. Create it before the work, call :meth:`finish` into the output dir.

    Example:
        >>> run = Run("data.synth", config={"seed": 0}, inputs={}, seed=0)
        >>> # ... write outputs into tmp ...
        >>> # run.finish(tmp, counts={"items": 10})
    """

    stage: str
    config: dict[str, Any]
    inputs: dict[str, str]
    seed: int | None
    started: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # the run id of every input that is a sidrec output, read when the run starts
    input_runs: dict[str, str | None] = field(init=False)
    pipeline: dict[str, Any] | None = field(init=False)

    def __post_init__(self) -> None:
        self.config = plain(self.config)
        self.input_runs = {k: run_id(v) for k, v in self.inputs.items()}
        self.pipeline = plain(PIPELINE_RECORD.get())

    def finish(self, out: Path, counts: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """Write ``config.yaml`` and ``manifest.json`` into ``out`` and return the manifest."""
        ended = time.time()
        manifest = {
            "stage": self.stage,
            "run_id": self.id,
            **extra,
            "inputs": self.inputs,
            "input_runs": self.input_runs,
            "counts": counts,
            "seed": self.seed,
            "sidrec_version": sidrec.__version__,
            "git_commit": git_commit(),
            "python": platform.python_version(),
            "started": _iso(self.started),
            "ended": _iso(ended),
            "seconds": round(ended - self.started, 3),
        }
        if self.pipeline is not None:
            manifest["pipeline"] = self.pipeline
        write_yaml(out / CONFIG_FILE, self.config)
        write_json(out / MANIFEST, manifest)
        return manifest
