"""Pieces every training stage (SFT, RL) shares: the output directory with resumable
checkpoints, precision, batch arithmetic, throughput and SwanLab logging."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainerState
from transformers.trainer import TRAINER_STATE_NAME

from sidrec.core.config import plain
from sidrec.core.errors import SidrecError
from sidrec.core.io import atomic_dir, is_complete, output_lock, read_json, write_json
from sidrec.core.manifest import Run, run_id
from sidrec.core.prompts import PromptSpec

CHECKPOINTS = "checkpoints"
PARTIAL = ".partial"
RUN_FILE = "run.json"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
SWANLAB_MODES = ("local", "cloud", "offline", "disabled")
SWANLOG = "swanlog"
TRAIN_LOG = "train_log.json"
# a hand-written loop's checkpoint: optimizer and other states, random state, best weights
LOOP_STATE = "training.pt"
Weights = dict[str, torch.Tensor]


def on_main(state: PartialState, fn: Callable[[], Any]) -> None:
    """Run ``fn`` on the main process only; a :class:`SidrecError` it raises is raised on every
    process, with its message, so that no process waits at a barrier for one that has quit."""
    error = None
    if state.is_main_process:
        try:
            fn()
        except SidrecError as e:
            error = str(e)
    if state.num_processes > 1:
        box = [error]
        broadcast_object_list(box, from_process=0)
        error = box[0]
    if error is not None:
        raise SidrecError(error)


def work_dir(out: Path) -> Path:
    """Where a training run into ``out`` keeps its checkpoints until it is complete:
    ``<out>.partial`` beside it."""
    return out.with_name(out.name + PARTIAL)


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config trees, as ``key: old -> new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d
            for k in sorted(set(old) | set(new), key=str)
            for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")
        ]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def prepare_work(out: Path, resume: bool, overwrite: bool, started: dict[str, Any]) -> Path:
    """Check ``out`` before a training run (main process, under ``out``'s lock), record what
    the run is started with (``started``: run id, settings, inputs and their run ids) in its
    work directory (see :func:`work_dir`) and return that directory.

    ``out`` itself is only ever written complete, in one step, when training is done. An
    unfinished run is not silently discarded: ``resume`` continues it (if it was started with
    the same settings and inputs) and ``overwrite`` clears it. A complete ``out`` is replaced
    only with ``overwrite``, and only once the new run is done.
    """
    work = work_dir(out)
    if out.exists() and not out.is_dir():
        raise SidrecError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not is_complete(out):
        raise SidrecError(
            f"{out}: exists, is not empty and is not a sidrec output; choose another --out "
            "or remove it"
        )
    run_file = work / RUN_FILE
    previous = read_json(run_file) if run_file.is_file() else None
    if is_complete(out) and previous is not None and previous["run_id"] == run_id(out):
        shutil.rmtree(work)  # left by a run killed after publishing its output
        previous = None
    if is_complete(out) and not overwrite:
        raise SidrecError(f"{out}: already complete; pass --overwrite to train again")
    if work.exists() and (overwrite or last_checkpoint(work) is None):
        shutil.rmtree(work)  # cleared, or nothing in it to resume: no checkpoint was saved
    elif work.exists():
        if not resume:
            raise SidrecError(
                f"{work}: holds an unfinished run of {out}; pass --resume to continue it from "
                "its last checkpoint or --overwrite to start again"
            )
        if previous is not None:
            changed = _differences(
                {k: previous[k] for k in ("settings", "input_runs")},
                {k: started[k] for k in ("settings", "input_runs")},
            )
            if changed:
                raise SidrecError(
                    f"{work}: the unfinished run was started with other settings or inputs "
                    f"({'; '.join(changed[:5])}); pass --overwrite to start again"
                )
    work.mkdir(parents=True, exist_ok=True)
    write_json(run_file, started)
    return work


def claim_output(
    stack: ExitStack,
    state: PartialState,
    out: Path,
    run: Run,
    settings: dict[str, Any],
    resume: bool,
    overwrite: bool,
) -> Path:
    """Before a training run: on the main process take ``out``'s lock (held until ``stack``
    closes) and check ``out`` and its work directory with :func:`prepare_work`, recording
    ``run`` and the ``settings`` it must be resumed with; an error there ends every process.
    Returns the work directory."""
    started = {
        "run_id": run.id,
        "settings": plain(settings),
        "inputs": run.inputs,
        "input_runs": run.input_runs,
        "pipeline": run.pipeline,
    }

    def claim() -> None:
        stack.enter_context(output_lock(out))
        prepare_work(out, resume, overwrite, started)

    on_main(state, claim)
    return work_dir(out)


def last_checkpoint(work: Path) -> str | None:
    """The newest complete checkpoint of an interrupted run in ``work``, if there is one.

    The trainer writes a checkpoint's ``trainer_state.json`` last, so a run killed while
    saving leaves a newer checkpoint without it: that one is skipped.
    """
    ckpt = work / CHECKPOINTS
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


class TimeBudget(TrainerCallback):
    """Ends training at the first step after ``minutes`` of this run (0 = never), saving and
    evaluating that step so the kept checkpoint is chosen among everything trained."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60
        self.started = time.perf_counter()

    def on_train_begin(self, args: Any, state: TrainerState, control: Any, **kw: Any) -> None:
        self.started = time.perf_counter()

    def on_step_end(self, args: Any, state: TrainerState, control: Any, **kw: Any) -> Any:
        if 0 < self.seconds <= time.perf_counter() - self.started:
            control.should_training_stop = True
            control.should_evaluate = control.should_save = True
        return control


def swanlab_callbacks(cfg: dict[str, Any], stage: str) -> list[TrainerCallback]:
    """SwanLab's own transformers callback (it starts the run itself), or nothing if disabled.

    ``cfg`` is a resolved config; the run is ``<run_name>-<stage>`` in ``swanlab.project``, logged
    under :func:`swanlab_dir`.
    """
    s = cfg["swanlab"]
    if not swanlab_on(cfg):
        return []
    from swanlab.integration.transformers import SwanLabCallback

    return [
        SwanLabCallback(
            project=s["project"],
            experiment_name=f"{cfg['run_name']}-{stage}",
            log_dir=str(swanlab_dir(cfg)),
            mode=s["mode"],
        )
    ]


def swanlab_run(cfg: dict[str, Any], stage: str) -> Any | None:
    """A SwanLab run ``<run_name>-<stage>`` for a stage that trains without a transformers
    Trainer (SASRec), logged under :func:`swanlab_dir`; None when disabled. Log with its
    ``log(metrics, step=...)``, close with ``finish()``."""
    if not swanlab_on(cfg):
        return None
    import swanlab

    s = cfg["swanlab"]
    return swanlab.init(
        project=s["project"],
        name=f"{cfg['run_name']}-{stage}",
        log_dir=str(swanlab_dir(cfg)),
        mode=s["mode"],
        reinit=True,
    )


def swanlab_on(cfg: dict[str, Any]) -> bool:
    """Whether runs log to SwanLab (``swanlab.mode`` is not ``disabled``)."""
    mode = cfg["swanlab"]["mode"]
    if mode not in SWANLAB_MODES:
        raise SidrecError(f"swanlab.mode must be one of {SWANLAB_MODES}, got {mode!r}")
    return mode != "disabled"


def swanlab_dir(cfg: dict[str, Any]) -> Path:
    """Where every run of ``cfg``'s project logs: ``swanlab.log_dir``, by default
    ``<output_root>/swanlog``."""
    given = cfg["swanlab"]["log_dir"]
    return Path(given).expanduser() if given else Path(cfg["output_root"]) / SWANLOG


def _stopped(checkpoint: str) -> bool:
    """Whether training had stopped when ``checkpoint`` was saved (the trainer saves its
    control flags with each checkpoint)."""
    state = read_json(Path(checkpoint) / TRAINER_STATE_NAME)
    control = state.get("stateful_callbacks", {}).get("TrainerControl", {}).get("args", {})
    return bool(control.get("should_training_stop"))


def train_or_finish(trainer: Trainer, last: str | None) -> tuple[float | None, float | None]:
    """Train (resuming from checkpoint ``last`` when given); returns the training loss and
    seconds (None when nothing was left to train).

    When ``last`` was saved after training had ended (its last step, or early stopping) the run
    died before publishing: transformers would run one more update before it checks, so the
    finished state is taken as saved instead, best model included.
    """
    if last is not None and _stopped(last):
        trainer.state = TrainerState.load_from_json(str(Path(last) / TRAINER_STATE_NAME))
        trainer._load_from_checkpoint(last)
        if trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint:
            trainer._load_best_model()
        return None, None
    result = trainer.train(resume_from_checkpoint=last)
    return result.training_loss, result.metrics.get("train_runtime")


@contextmanager
def publish_model(
    out: Path,
    work: Path,
    model: PreTrainedModel,
    tok: Any,
    spec: PromptSpec,
    log_history: list[dict[str, Any]],
    dashboard: bool,
) -> Iterator[Path]:
    """Write a trained model directory (weights, tokenizer, ``prompting.json``,
    ``train_log.json``) into a temporary directory, yield it for the rest (bundled SIDs and
    items, the manifest last), then put it at ``out`` in one step and drop the work directory
    ``work``. ``dashboard``: close the SwanLab run first."""
    if dashboard:
        import swanlab

        swanlab.finish()
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        spec.save(tmp)
        write_json(tmp / TRAIN_LOG, log_history)
        yield tmp
    shutil.rmtree(work, ignore_errors=True)


def save_loop_checkpoint(
    work: Path,
    step: int,
    weights_file: str,
    model: torch.nn.Module,
    stateful: dict[str, Any],
    progress: dict[str, Any],
    best: Weights,
) -> None:
    """Checkpoint a hand-written training loop at ``step`` into ``work``: the weights (as
    ``weights_file``), the state of each of ``stateful`` (optimizer, schedule, weight average),
    the best weights and torch's random state, and ``progress`` (JSON) last, which makes it
    complete; older checkpoints are removed."""
    ckpt = work / CHECKPOINTS / f"checkpoint-{step}"
    shutil.rmtree(ckpt, ignore_errors=True)
    ckpt.mkdir(parents=True)
    torch.save(model.state_dict(), ckpt / weights_file)
    saved = {k: v.state_dict() for k, v in stateful.items()}
    saved.update(torch_rng=torch.get_rng_state(), best=best)
    if torch.cuda.is_available():
        saved["cuda_rng"] = torch.cuda.get_rng_state_all()
    torch.save(saved, ckpt / LOOP_STATE)
    write_json(ckpt / TRAINER_STATE_NAME, progress)
    for old in (work / CHECKPOINTS).iterdir():
        if old != ckpt:
            shutil.rmtree(old, ignore_errors=True)


def restore_loop_checkpoint(
    last: str,
    weights_file: str,
    model: torch.nn.Module,
    stateful: dict[str, Any],
    rng: np.random.Generator | None = None,
) -> tuple[dict[str, Any], Weights]:
    """Load a checkpoint of :func:`save_loop_checkpoint` into ``model``, ``stateful`` and the
    random states (``rng``'s, when given, from ``progress["numpy_rng"]``); returns its
    progress and best weights."""
    ckpt = Path(last)
    model.load_state_dict(torch.load(ckpt / weights_file, weights_only=True))
    saved = torch.load(ckpt / LOOP_STATE, weights_only=True)
    for key, obj in stateful.items():
        obj.load_state_dict(saved[key])
    torch.set_rng_state(saved["torch_rng"])
    if "cuda_rng" in saved and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    progress = read_json(ckpt / TRAINER_STATE_NAME)
    if rng is not None:
        rng.bit_generator.state = progress["numpy_rng"]
    return progress, saved["best"]
