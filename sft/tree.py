"""``sidrec sft`` for ``model.family: tree``: train the SID-trie model
(:mod:`sidrec.core.tree_model`) on a dataset's training sequences and its SIDs.

The loss is -log p(next item's SID) at every position of each user's training sequence (the
objective SASRec has, with the trie softmax for the flat one), optionally mixed with a trained
SASRec's item distribution (``tree.teacher``, ``tree.distill_weight``). After every epoch the
whole catalog is scored exactly for a seeded sample of validation users and the epoch with the
best NDCG@10 is kept; training stops after ``tree.patience`` epochs without a better one, after
``tree.epochs`` or after ``tree.max_minutes``. Every epoch leaves a checkpoint in
``<out>.partial/``, so an interrupted run continues with ``--resume`` exactly where it stopped.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sidrec.core.config import stage_path
from sidrec.core.dataset import Dataset, read_dataset
from sidrec.core.errors import InputError, SidrecError
from sidrec.core.io import atomic_dir, write_json
from sidrec.core.manifest import Run
from sidrec.core.metrics import hr_ndcg, target_ranks
from sidrec.core.model_dir import bundle
from sidrec.core.sasrec_model import POSITIONS, SASRec, item_windows, load_sasrec, window_batches
from sidrec.core.sequences import query_rows, user_sequences
from sidrec.core.sids import SidTable, read_sid_dir
from sidrec.core.training import (
    TRAIN_LOG,
    Weights,
    claim_output,
    last_checkpoint,
    restore_loop_checkpoint,
    save_loop_checkpoint,
    swanlab_run,
)
from sidrec.core.tree_model import (
    TREE_CONFIG,
    TREE_FILE,
    TreeSID,
    Trie,
    is_tree_model,
    load_tree,
    rank_tree,
)

VALID_K = 10
# tree.teacher's name for the SASRec at paths.sasrec
TEACHER_STAGE = "sasrec"
SELECT = f"NDCG@{VALID_K}"


def _check(t: dict[str, Any]) -> None:
    """Refuse ``tree`` settings no run can train with, in one line."""
    whole = ("hidden", "layers", "heads", "max_len", "epochs", "batch_size", "eval_batch_size")
    bad = [f"tree.{k}={t[k]}" for k in whole if t[k] < 1]
    bad += [f"tree.{k}={t[k]}" for k in ("patience", "max_valid_users", "max_minutes") if t[k] < 0]
    if not 0 <= t["dropout"] < 1 or not 0 <= t["distill_weight"] <= 1 or t["temperature"] <= 0:
        bad.append("tree.dropout in [0, 1), tree.distill_weight in [0, 1], tree.temperature > 0")
    if not 0 < t["lr_factor"] <= 1 or not 0 <= t["ema"] < 1:
        bad.append("tree.lr_factor in (0, 1], tree.ema in [0, 1)")
    if t["position"] not in POSITIONS:
        bad.append(f"tree.position one of {POSITIONS}")
    if t["hidden"] % t["heads"] or (t["position"] == "rope" and (t["hidden"] // t["heads"]) % 2):
        bad.append("tree.hidden split into tree.heads heads (of an even size for rope)")
    if bad:
        raise SidrecError(f"bad tree settings: {'; '.join(bad)}")


def teacher_path(cfg: dict[str, Any]) -> Path | None:
    """Where the SASRec to distil is: ``tree.teacher`` (``sasrec`` = ``paths.sasrec``, what
    ``sidrec pipeline`` trains first), or None."""
    given = cfg["tree"]["teacher"]
    if given is None or cfg["tree"]["distill_weight"] == 0:
        return None
    return stage_path(cfg, "sasrec") if given == TEACHER_STAGE else Path(given)


def _teacher(cfg: dict[str, Any], n_items: int) -> SASRec | None:
    """The SASRec to distil, checked against the dataset and ``tree.max_len``."""
    path = teacher_path(cfg)
    if path is None:
        return None
    model, max_len = load_sasrec(path, n_items)
    if max_len < cfg["tree"]["max_len"]:
        raise InputError(
            path, f"reads {max_len} items of history, tree.max_len is {cfg['tree']['max_len']}"
        )
    return model


def _initial_model(t: dict[str, Any], table: SidTable) -> TreeSID:
    """A new model with the ``tree`` settings ``t``, or with ``tree.init``'s shape and weights
    (a tree model directory trained on ``table``'s SIDs or on SIDs ``table`` grows)."""
    if t["init"] is None:
        return TreeSID(len(table.codes), Trie(table), t)
    if not is_tree_model(t["init"]):
        raise InputError(t["init"], f"is not a tree model directory (tree.init; no {TREE_CONFIG})")
    start = load_tree(t["init"], table)
    return start.train()


def _windows(ds: Dataset, max_len: int) -> list[tuple[list[int], list[int]]]:
    """Training windows of every user's sequence (a leave-one-out split), or where training
    rows are not prefixes of one sequence (a temporal split, an update's rows) one window per
    row with the loss on its target."""
    try:
        return item_windows(user_sequences(ds), max_len)
    except SidrecError:
        rows = zip(ds.train["history"].to_list(), ds.train["target"].to_list(), strict=True)
        return [
            ([i + 1 for i in h[-max_len:]], [-100] * (len(h[-max_len:]) - 1) + [t])
            for h, t in rows
            if h
        ]


def _epoch(
    model: TreeSID,
    opt: torch.optim.Optimizer,
    windows: list[tuple[list[int], list[int]]],
    t: dict[str, Any],
    rng: np.random.Generator,
    teacher: SASRec | None,
    ema: AveragedModel | None,
) -> float:
    """One pass over the training windows, ``ema`` (if any) updated after every step; the mean
    loss per target."""
    model.train()
    total, count = 0.0, 0
    w = t["distill_weight"] if teacher is not None else 0.0
    device = model.item_codes.device
    for seq, target in window_batches(windows, t["batch_size"], rng, device):
        keep = target >= 0
        h, items = model.encode(seq)[keep], target[keep]
        loss = model.loss(h, items)
        if w > 0:
            with torch.no_grad():
                probs = (teacher.scores(teacher(seq)[keep]) / t["temperature"]).softmax(-1)
            loss = (1 - w) * loss + w * model.distill_loss(h, probs, items)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update_parameters(model)
        total += float(loss.detach()) * len(items)
        count += len(items)
    return total / max(count, 1)


Progress = dict[str, Any]  # JSON: epoch, log, best, waited, seconds, numpy_rng


def _stateful(model: TreeSID, opt: Any, t: dict[str, Any]) -> dict[str, Any]:
    """The optimizer, and where the ``tree`` settings ask for them the learning-rate decay on a
    validation plateau (``lr_factor``) and the averaged weights (``ema``)."""
    stateful: dict[str, Any] = {"optimizer": opt}
    if t["lr_factor"] < 1:
        stateful["scheduler"] = ReduceLROnPlateau(opt, "max", factor=t["lr_factor"], patience=0)
    if t["ema"] > 0:
        stateful["ema"] = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t["ema"]))
    return stateful


def _fit(
    model: TreeSID,
    opt: Any,
    windows: list[tuple[list[int], list[int]]],
    valid: Any,
    teacher: SASRec | None,
    cfg: dict[str, Any],
    work: Path,
    last: str | None,
) -> tuple[Progress, Weights]:
    """Train epoch by epoch, from ``last`` when resuming, with a checkpoint after each; returns
    the progress and the best epoch's weights (of the averaged model with ``tree.ema``)."""
    t = cfg["tree"]
    rng = np.random.default_rng(cfg["seed"])
    stateful = _stateful(model, opt, t)
    ema, scheduler = stateful.get("ema"), stateful.get("scheduler")
    scored = model if ema is None else ema.module
    progress: Progress = {"epoch": 0, "log": [], "best": -1.0, "waited": 0, "seconds": 0.0}
    best: Weights = {}
    if last is not None:
        progress, best = restore_loop_checkpoint(last, TREE_FILE, model, stateful, rng)
    hist, target = valid["history"].to_list(), valid["target"].to_numpy()
    dashboard = swanlab_run(cfg, "sft")
    while progress["epoch"] < t["epochs"] and not _done(t, progress):
        started = time.perf_counter()
        loss = _epoch(model, opt, windows, t, rng, teacher, ema)
        top, _, _ = rank_tree(
            scored, hist, VALID_K, t["eval_batch_size"], cfg["evaluate"]["exclude_history"]
        )
        found = hr_ndcg(target_ranks(top, target), [VALID_K])
        progress["epoch"] += 1
        progress["seconds"] += time.perf_counter() - started
        lr = opt.param_groups[0]["lr"]
        progress["log"].append({"epoch": progress["epoch"], "train_loss": loss, "lr": lr, **found})
        if dashboard is not None:
            shown = {f"valid/{k.lower()}": v for k, v in found.items()}
            dashboard.log({"train/loss": loss, "train/lr": lr, **shown}, step=progress["epoch"])
        if found[SELECT] > progress["best"]:
            progress["best"], progress["waited"] = found[SELECT], 0
            best = {k: v.detach().clone() for k, v in scored.state_dict().items()}
        else:
            progress["waited"] += 1
        if scheduler is not None:
            scheduler.step(found[SELECT])
        progress["numpy_rng"] = rng.bit_generator.state
        save_loop_checkpoint(work, progress["epoch"], TREE_FILE, model, stateful, progress, best)
    if dashboard is not None:
        dashboard.finish()
    return progress, best


def _done(t: dict[str, Any], progress: Progress) -> bool:
    """Whether early stopping (``tree.patience``) or the time budget (``tree.max_minutes``)
    ends the run."""
    out_of_time = 0 < t["max_minutes"] * 60 <= progress["seconds"]
    return out_of_time or 0 < t["patience"] <= progress["waited"]


def train_tree(
    data: str | Path,
    sid: str | Path,
    out: str | Path,
    cfg: dict[str, Any],
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a ``tree`` model on ``data`` with the SIDs in ``sid``; write ``tree.pt``,
    ``tree.json``, the bundled SIDs and items, ``train_log.json``, the config and a manifest
    into ``out`` (resumable: see the module docstring). Returns the manifest."""
    t = cfg["tree"]
    _check(t)
    data, sid, out = Path(data), Path(sid), Path(out)
    ds, _ = read_dataset(data)
    table = read_sid_dir(sid)
    if len(table.codes) != ds.items.height:
        raise InputError(
            sid, f"holds SIDs of {len(table.codes)} items, {data} has {ds.items.height}"
        )
    run = Run("sft", cfg, {"data": str(data), "sid": str(sid)}, cfg["seed"])
    state = PartialState(cpu=not torch.cuda.is_available())
    teacher = _teacher(cfg, ds.items.height)
    if teacher is not None:
        teacher.to(state.device)
    with ExitStack() as stack:
        settings = {"seed": cfg["seed"], "family": cfg["model"]["family"], "tree": t}
        work = claim_output(stack, state, out, run, settings, resume, overwrite)
        last = last_checkpoint(work) if resume else None
        torch.manual_seed(cfg["seed"])
        model = _initial_model(t, table).to(state.device)
        opt = torch.optim.AdamW(
            model.parameters(), lr=t["learning_rate"], weight_decay=t["weight_decay"]
        )
        windows = _windows(ds, model.encoder.max_len)
        valid = query_rows(ds, "valid", t["max_valid_users"], cfg["seed"])
        progress, best = _fit(model, opt, windows, valid, teacher, cfg, work, last)
        log = progress["log"]
        with atomic_dir(out, overwrite=True) as tmp:
            torch.save(best, tmp / TREE_FILE)
            write_json(tmp / TREE_CONFIG, {"family": "tree", **model.shape})
            write_json(tmp / TRAIN_LOG, log)
            digest = bundle(tmp, sid, ds.items)
            top = max(log, key=lambda r: r[SELECT])
            manifest = run.finish(
                tmp,
                {"train_windows": len(windows), "valid_users": valid.height, "epochs": len(log)},
                family="tree",
                sid_hash=digest,
                resumed_from=Path(last).name if last else None,
                best_epoch=top["epoch"],
                best_valid_ndcg10=top[SELECT],
                train_seconds=round(progress["seconds"], 1),
                parameters=sum(p.numel() for p in model.parameters()),
                teacher=str(teacher_path(cfg)) if teacher is not None else None,
            )
        shutil.rmtree(work, ignore_errors=True)
    return manifest
