"""``sidrec convert``: SFT examples (prompt, completion, task) from a dataset and its SIDs.

Tasks (each weighted in ``convert.tasks``; the first is the one the recommender is scored on):

==========================  ======================================  =====================
task                        prompt                                  completion
==========================  ======================================  =====================
``sid_history``             the SIDs of the history                 the next item's SID
``title_to_sid``            an item's title                         its SID
``sid_to_title``            an item's SID                           its title
``sid_history_to_title``    the SIDs of the history                 the next item's title
``title_history_to_sid``    the titles of the history               the next item's SID
``title_history_to_title``  the titles of the history               the next item's title
==========================  ======================================  =====================

With ``sft.format=sequence`` the main task becomes ``sid_sequence``: one example per user
window of at most ``max_history + 1`` items (the dataset's history length, so training context
and evaluation history agree), prompt = the first item(s), completion = every later item.

Besides ``prompt``, ``completion`` and ``task``, each example keeps its ``template`` and
``history`` (the history's items as they appear in the prompt, oldest first), so that SFT can
drop the oldest items of a prompt that is too long, the same way evaluation does. The
directory's ``prompting.json`` says how the main task's prompts were made.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sidrec.core.config import plain
from sidrec.core.dataset import Dataset, read_dataset
from sidrec.core.errors import SidrecError
from sidrec.core.examples import EXAMPLE_SCHEMA, MAIN_TASK, SEQUENCE_TASK, TASK_FIELDS
from sidrec.core.io import atomic_dir
from sidrec.core.manifest import Run
from sidrec.core.prompts import PromptSpec, fill_template, history_separator
from sidrec.core.sequences import (
    sequence_windows,
    training_frequency,
    user_sequences,
    weighted_pick,
)
from sidrec.core.sids import SidTable, read_sid_dir

# (prompt, completion, template, history items): template and history are empty where the
# prompt has no history to shorten
Row = tuple[str, str, str, list[str]]


def _check_templates(templates: dict[str, list[str]], tasks: dict[str, float]) -> None:
    for task, weight in tasks.items():
        if weight < 0:
            raise SidrecError(f"convert.tasks.{task} must be >= 0, got {weight}")
        if weight == 0:
            continue
        paraphrases = templates.get(task) or []
        if not paraphrases:
            raise SidrecError(f"convert.templates.{task} needs at least one template")
        for i, t in enumerate(paraphrases):
            for field in TASK_FIELDS[task]:
                if "{" + field + "}" not in t:
                    raise SidrecError(
                        f"convert.templates.{task}[{i}] must contain {{{field}}}: {t!r}"
                    )


def _titles(ds: Dataset) -> list[str | None]:
    return [t.strip() if t and t.strip() else None for t in ds.items["title"].to_list()]


def _task_rows(
    task: str, ds: Dataset, sids: list[str], titles: list[str | None], split: str
) -> tuple[list[dict[str, Any]], int]:
    """Fields and completion of every example ``task`` can make (``history``: the list of
    items); returns them and how many were skipped."""
    rows: list[dict[str, Any]] = []
    skipped = 0
    if task in ("title_to_sid", "sid_to_title"):
        for sid, title in zip(sids, titles, strict=True):
            if title is None:
                skipped += 1
            elif task == "title_to_sid":
                rows.append({"title": title, "completion": sid})
            else:
                rows.append({"sid": sid, "completion": title})
        return rows, skipped
    df = ds.split(split)
    for history, target in zip(df["history"].to_list(), df["target"].to_list(), strict=True):
        if task.startswith("title_history"):
            hist = [titles[i] for i in history]
            if any(t is None for t in hist):
                skipped += 1
                continue
            text = [f'"{t}"' for t in hist]
        else:
            text = [sids[i] for i in history]
        if task.endswith("_to_title"):
            if titles[target] is None:
                skipped += 1
                continue
            rows.append({"history": text, "completion": titles[target], "target": target})
        else:
            rows.append({"history": text, "completion": sids[target], "target": target})
    return rows, skipped


def _recent_copies(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Each history row again with only its last ``n`` items (rows already that short are not
    repeated): recent context on its own, for models that under-use it."""
    return [{**r, "history": r["history"][-n:]} for r in rows if len(r["history"]) > n]


def _pick(
    rows: list[dict[str, Any]],
    weight: float,
    balance: float,
    freq: np.ndarray,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """``round(weight * len(rows))`` rows: :func:`weighted_pick`, or with ``balance`` > 0 a
    seeded draw with replacement, each row's chance proportional to its target's training
    frequency to the power ``-balance`` (rows without a target keep weight 1)."""
    if balance == 0 or not rows or "target" not in rows[0]:
        return [rows[i] for i in weighted_pick(len(rows), weight, rng)]
    p = np.maximum(freq[[r["target"] for r in rows]], 1).astype(float) ** -balance
    idx = rng.choice(len(rows), size=round(weight * len(rows)), replace=True, p=p / p.sum())
    return [rows[i] for i in np.sort(idx)]


def _fill(
    rows: list[dict[str, Any]], templates: list[str], sep: str, rng: np.random.Generator
) -> list[Row]:
    """Each row's prompt from a template drawn with ``rng`` (history joined by ``sep``)."""
    choice = rng.integers(len(templates), size=len(rows))
    out = []
    for i, row in zip(choice, rows, strict=True):
        template = templates[int(i)]
        history = row.get("history", [])
        others = {k: v for k, v in row.items() if k not in ("completion", "history", "target")}
        prompt = fill_template(template, history, sep, **others)
        out.append((prompt, row["completion"], template if history else "", history))
    return out


def _frame(task: str, rows: list[Row]) -> pl.DataFrame:
    """Examples (:data:`EXAMPLE_SCHEMA`) of one task from its rows."""
    return pl.DataFrame(
        {
            "prompt": [r[0] for r in rows],
            "completion": [r[1] for r in rows],
            "task": [task] * len(rows),
            "template": [r[2] for r in rows],
            "history": [r[3] for r in rows],
        },
        schema=EXAMPLE_SCHEMA,
    )


def _sequence_rows(seqs: list[list[int]], sids: list[str], sep: str, window: int) -> list[Row]:
    rows = []
    for seq in seqs:
        for start, first, end in sequence_windows(len(seq), window):
            prompt = "".join(sids[i] + sep for i in seq[start:first])
            rows.append((prompt, sep.join(sids[i] for i in seq[first:end]), "", []))
    return rows


def build_examples(
    ds: Dataset, table: SidTable, cfg: dict[str, Any], seed: int, max_history: int
) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """Train and valid example frames (:data:`EXAMPLE_SCHEMA`) and counts per task.

    ``cfg`` is a resolved config (its ``convert`` and ``sft`` sections are read);
    ``max_history`` is the dataset's history length (sequence windows hold one item more).
    """
    conv, fmt = cfg["convert"], cfg["sft"]["format"]
    tasks, templates, sep = conv["tasks"], conv["templates"], conv["item_separator"]
    if len(table.codes) != ds.items.height:
        raise SidrecError(
            f"the SID directory has {len(table.codes)} items but the dataset has "
            f"{ds.items.height}: they were not made for each other"
        )
    if tasks.get(MAIN_TASK, 0) <= 0:
        raise SidrecError(f"convert.tasks.{MAIN_TASK} (the main task) must be > 0")
    if fmt == "sequence":
        others = [t for t, w in tasks.items() if t != MAIN_TASK and w > 0]
        if others:
            raise SidrecError(
                f"sft.format=sequence trains the main task only; set convert.tasks.{others[0]}=0"
            )
    _check_templates(templates, tasks)
    balance, recent = conv["popularity_balance"], conv["recent_items"]
    if not 0 <= balance <= 1:
        raise SidrecError(f"convert.popularity_balance must be in [0, 1], got {balance}")
    if recent < 0:
        raise SidrecError(f"convert.recent_items must be >= 0 (0 = off), got {recent}")
    if fmt == "sequence" and (balance or recent):
        raise SidrecError(
            "convert.popularity_balance and convert.recent_items shape prompt-format examples; "
            "sft.format=sequence trains whole sequences"
        )
    freq = training_frequency(ds)
    sids, titles = table.sids, _titles(ds)
    rng = np.random.default_rng(seed)
    frames: dict[str, list[pl.DataFrame]] = {"train": [], "valid": []}
    counts: dict[str, Any] = {"train": {}, "valid": {}, "skipped_no_title": {}}

    def add(split: str, task: str, rows: list[Row]) -> None:
        frames[split].append(_frame(task, rows))
        counts[split][task] = len(rows)

    if fmt == "sequence":
        rows = _sequence_rows(user_sequences(ds), sids, sep, max_history + 1)
        add(
            "train",
            SEQUENCE_TASK,
            [rows[i] for i in weighted_pick(len(rows), tasks[MAIN_TASK], rng)],
        )
    else:
        for task, weight in tasks.items():
            if weight == 0:
                continue
            rows, skipped = _task_rows(task, ds, sids, titles, "train")
            if skipped:
                counts["skipped_no_title"][task] = skipped
            if recent and TASK_FIELDS[task] == ("history",):
                rows = rows + _recent_copies(rows, recent)
            picked = _pick(rows, weight, balance, freq, rng)
            add("train", task, _fill(picked, templates[task], history_separator(task, sep), rng))
    spec = main_prompt_spec(cfg, False, max_history)
    valid = ds.valid
    limit = conv["max_valid_examples"]
    if limit and valid.height > limit:
        valid = valid.sample(n=limit, seed=seed).sort("user_id")
    frames["valid"].append(target_examples(valid, sids, spec))
    counts["valid"][MAIN_TASK if fmt == "prompt" else SEQUENCE_TASK] = valid.height
    if not any(f.height for f in frames["train"]):
        raise SidrecError("no training examples: the dataset's train split is empty")
    train = pl.concat(frames["train"]).sample(fraction=1.0, shuffle=True, seed=seed)
    return {"train": train, "valid": pl.concat(frames["valid"])}, counts


def target_examples(rows: pl.DataFrame, sids: list[str], spec: PromptSpec) -> pl.DataFrame:
    """Main-task examples (:data:`EXAMPLE_SCHEMA`) of ``(history, target)`` rows, as ``spec``
    queries the model: the loss on the target's SID only (validation; a daily update's
    fine-tuning set)."""
    shorten = spec.format == "prompt"
    out = []
    for h, t in zip(rows["history"].to_list(), rows["target"].to_list(), strict=True):
        history = [sids[i] for i in h]
        out.append(
            {
                "prompt": spec.history_text(history),
                "completion": sids[t],
                "task": MAIN_TASK if shorten else SEQUENCE_TASK,
                "template": spec.template if shorten else "",
                "history": history if shorten else [],
            }
        )
    return pl.DataFrame(out, schema=EXAMPLE_SCHEMA)


def finetune_examples(rows: pl.DataFrame, sids: list[str], spec: PromptSpec) -> pl.DataFrame:
    """Examples (:data:`EXAMPLE_SCHEMA`) that fine-tune a trained model on ``(history,
    target)`` rows (a daily update), in its format: for a ``sequence`` model whole sequences,
    history then target, every item after the first a target, as it was trained (a row whose
    sequence begins a longer one of the same user's is left out; repeated rows stay
    repeated); for a ``prompt`` model the main task, as :func:`target_examples`."""
    if spec.format == "prompt":
        return target_examples(rows, sids, spec)
    seqs: dict[str, list[list[int]]] = {}
    ordered = rows.sort(pl.col("history").list.len(), descending=True)
    for user, h, t in ordered.select("user_id", "history", "target").iter_rows():
        seq, kept = [*h, t], seqs.setdefault(user, [])
        if not any(len(k) > len(seq) and k[: len(seq)] == seq for k in kept):
            kept.append(seq)
    found = _sequence_rows(
        [q for kept in seqs.values() for q in kept], sids, spec.separator, spec.max_history + 1
    )
    return _frame(SEQUENCE_TASK, found)


def main_prompt_spec(cfg: dict[str, Any], chat_template: bool, max_history: int) -> PromptSpec:
    """The main task's prompt format for a resolved config (valid examples use template 0)."""
    return PromptSpec(
        format=cfg["sft"]["format"],
        template=cfg["convert"]["templates"][MAIN_TASK][0],
        separator=cfg["convert"]["item_separator"],
        chat_template=chat_template,
        max_history=max_history,
        max_length=cfg["sft"]["max_length"],
    )


def convert(
    data: str | Path,
    sid: str | Path,
    out: str | Path,
    cfg: dict[str, Any],
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write ``train.parquet`` and ``valid.parquet`` of examples into ``out``; return the
    manifest (counts per split and task)."""
    ds, data_manifest = read_dataset(data)
    max_history = data_manifest["split"]["max_history"]
    table = read_sid_dir(sid)
    s = cfg["sft"]
    section = {"convert": cfg["convert"], "sft": {k: s[k] for k in ("format", "max_length")}}
    run = Run(
        "convert",
        {**plain(section), "seed": cfg["seed"]},
        {"data": str(data), "sid": str(sid)},
        cfg["seed"],
    )
    frames, counts = build_examples(ds, table, cfg, cfg["seed"], max_history)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for name, df in frames.items():
            df.write_parquet(tmp / f"{name}.parquet")
        main_prompt_spec(cfg, False, max_history).save(tmp)
        log(f"examples: {counts['train']} train, {counts['valid']} valid")
        return run.finish(tmp, counts, format=s["format"], max_history=max_history)
