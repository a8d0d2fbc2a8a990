"""Pieces every training stage (SFT, RL) shares: the output directory with resumable
checkpoints, precision, batch arithmetic, throughput and SwanLab logging."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME

from sidrec.errors import SidrecError
from sidrec.io import is_complete

CHECKPOINTS = "checkpoints"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
SWANLAB_MODES = ("local", "cloud", "offline", "disabled")


def prepare_output(out: Path, resume: bool, overwrite: bool) -> None:
    """Check ``out`` before a training run (main process only); the trainer creates it.

    A run in progress keeps its checkpoints in ``out/checkpoints``; the directory counts as
    complete only once its manifest is written. Without ``resume`` an interrupted run is not
    silently discarded: pass ``--resume`` to continue it or ``--overwrite`` to clear it.
    """
    if out.exists() and not out.is_dir():
        raise SidrecError(f"{out}: exists and is not a directory")
    if is_complete(out):
        if not overwrite:
            raise SidrecError(f"{out}: already complete; pass --overwrite to train again")
        shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif not resume:
            raise SidrecError(
                f"{out}: holds an unfinished run; pass --resume to continue it from its last "
                "checkpoint or --overwrite to start again"
            )


def last_checkpoint(out: Path) -> str | None:
    """The newest complete checkpoint of an interrupted run in ``out``, if there is one.

    The trainer writes a checkpoint's ``trainer_state.json`` last, so a run killed while
    saving leaves a newer checkpoint without it: that one is skipped.
    """
    ckpt = out / CHECKPOINTS
    steps = sorted(
        (int(m.group(1)), p)
        for p in (ckpt.iterdir() if ckpt.is_dir() else ())
        if (m := _CHECKPOINT.fullmatch(p.name)) and p.is_dir()
    )
    complete = [p for _, p in steps if (p / TRAINER_STATE_NAME).is_file()]
    return str(complete[-1]) if complete else None


def use_bf16(setting: bool | None) -> bool:
    """bf16 mixed precision: ``setting``, or (None) whether the GPU supports it."""
    supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if setting and not supported:
        raise SidrecError("bf16=true needs a GPU with bf16 support")
    return supported if setting is None else setting


def accumulation_steps(global_batch: int, per_device: int, processes: int) -> int:
    """Gradient accumulation steps so that per_device x processes x steps = global_batch."""
    step = per_device * processes
    if global_batch < 1 or per_device < 1 or global_batch % step:
        raise SidrecError(
            f"global_batch_size={global_batch} must be a positive multiple of "
            f"per_device_batch_size={per_device} x {processes} process(es) = {step}"
        )
    return global_batch // step


def swanlab_callbacks(cfg: dict[str, Any], out: Path, stage: str) -> list[TrainerCallback]:
    """SwanLab's own transformers callback (it starts the run itself), or nothing if disabled.

    ``cfg`` is a resolved config; the run is ``<run_name>-<stage>`` in ``swanlab.project``, logged
    under ``swanlab.log_dir`` (default: ``out/swanlog``).
    """
    s = cfg["swanlab"]
    if s["mode"] not in SWANLAB_MODES:
        raise SidrecError(f"swanlab.mode must be one of {SWANLAB_MODES}, got {s['mode']!r}")
    if s["mode"] == "disabled":
        return []
    from swanlab.integration.transformers import SwanLabCallback

    return [
        SwanLabCallback(
            project=s["project"],
            experiment_name=f"{cfg['run_name']}-{stage}",
            log_dir=str(Path(s["log_dir"]).expanduser() if s["log_dir"] else out / "swanlog"),
            mode=s["mode"],
        )
    ]
