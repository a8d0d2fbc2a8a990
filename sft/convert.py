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
window, prompt = the first item(s), completion = every later item of the window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sidrec.data.dataset import Dataset, read_dataset
from sidrec.errors import SidrecError
from sidrec.io import atomic_dir
from sidrec.manifest import Run
from sidrec.prompts import PromptSpec
from sidrec.sids import SidTable, read_sid_dir

MAIN_TASK = "sid_history"
SEQUENCE_TASK = "sid_sequence"
TASK_FIELDS = {
    "sid_history": ("history",),
    "title_to_sid": ("title",),
    "sid_to_title": ("sid",),
    "sid_history_to_title": ("history",),
    "title_history_to_sid": ("history",),
    "title_history_to_title": ("history",),
}
EXAMPLE_SCHEMA = {"prompt": pl.String, "completion": pl.String, "task": pl.String}

Row = tuple[str, str]  # (prompt text before templating fields are filled, completion)


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


def _quote(titles: Sequence[str]) -> str:
    return ", ".join(f'"{t}"' for t in titles)


def _task_rows(
    task: str, ds: Dataset, sids: list[str], titles: list[str | None], sep: str, split: str
) -> tuple[list[dict[str, str]], int]:
    """Fields and completion of every example ``task`` can make; returns them and the skipped."""
    rows: list[dict[str, str]] = []
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
            text = _quote(hist)  # type: ignore[arg-type]
        else:
            text = sep.join(sids[i] for i in history)
        if task.endswith("_to_title"):
            if titles[target] is None:
                skipped += 1
                continue
            rows.append({"history": text, "completion": titles[target]})  # type: ignore[dict-item]
        else:
            rows.append({"history": text, "completion": sids[target]})
    return rows, skipped


def _pick(n: int, weight: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``round(weight * n)`` examples: whole repeats, then a sample without repeats."""
    whole, frac = divmod(weight, 1.0)
    extra = np.sort(rng.choice(n, size=round(frac * n), replace=False)) if n else np.array([])
    return np.concatenate([np.tile(np.arange(n), int(whole)), extra]).astype(np.int64)


def _fill(rows: list[dict[str, str]], templates: list[str], rng: np.random.Generator) -> list[Row]:
    """Each row's prompt from a template drawn with ``rng``, and its completion."""
    choice = rng.integers(len(templates), size=len(rows))
    return [
        (
            templates[int(i)].format(**{k: v for k, v in row.items() if k != "completion"}),
            row["completion"],
        )
        for i, row in zip(choice, rows, strict=True)
    ]


def user_sequences(ds: Dataset) -> list[list[int]]:
    """Each user's training sequence: the items up to the last training target.

    Needs a split where every training example is a prefix of its user's sequence
    (leave-one-out); raises otherwise.
    """
    targets = ds.train.group_by("user_id", maintain_order=True).agg(pl.col("target"))
    seqs = ds.sequences
    items = dict(zip(seqs["user_id"].to_list(), seqs["item_ids"].to_list(), strict=True))
    out = []
    for user, tgts in zip(targets["user_id"].to_list(), targets["target"].to_list(), strict=True):
        seq = items.get(user, [])[: len(tgts) + 1]
        if sorted(seq[1:]) != sorted(tgts):
            raise SidrecError(
                f"sft.format=sequence needs every training example to be a prefix of its user's "
                f"sequence (a leave-one-out split); user {user!r} differs"
            )
        out.append(seq)
    return out


def sequence_windows(n_items: int, window: int) -> list[tuple[int, int, int]]:
    """Training windows over a sequence of ``n_items``: ``(start, first_loss, end)`` each.

    The loss covers items ``first_loss..end-1`` of each window, every item after the first
    exactly once; later windows keep ``window // 2`` items of context.

    Example:
        >>> sequence_windows(5, 50), sequence_windows(7, 4)
        ([(0, 1, 5)], [(0, 1, 4), (2, 4, 6), (4, 6, 7)])
    """
    if window < 2:
        raise SidrecError(f"sft.max_sequence_items must be >= 2, got {window}")
    out = []
    start, covered = 0, 1
    while covered < n_items:
        end = min(start + window, n_items)
        out.append((start, covered, end))
        covered = end
        start = end - window // 2
    return out


def _sequence_rows(ds: Dataset, sids: list[str], sep: str, window: int) -> list[Row]:
    rows = []
    for seq in user_sequences(ds):
        for start, first, end in sequence_windows(len(seq), window):
            prompt = "".join(sids[i] + sep for i in seq[start:first])
            rows.append((prompt, sep.join(sids[i] for i in seq[first:end])))
    return rows


def build_examples(
    ds: Dataset, table: SidTable, cfg: dict[str, Any], seed: int
) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """Train and valid example frames (prompt, completion, task) and counts per task.

    ``cfg`` is a resolved config (its ``convert`` and ``sft`` sections are read).
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
    sids, titles = table.sids, _titles(ds)
    rng = np.random.default_rng(seed)
    frames: dict[str, list[pl.DataFrame]] = {"train": [], "valid": []}
    counts: dict[str, Any] = {"train": {}, "valid": {}, "skipped_no_title": {}}

    def add(split: str, task: str, rows: list[Row]) -> None:
        frames[split].append(
            pl.DataFrame(
                {
                    "prompt": [r[0] for r in rows],
                    "completion": [r[1] for r in rows],
                    "task": [task] * len(rows),
                },
                schema=EXAMPLE_SCHEMA,
            )
        )
        counts[split][task] = len(rows)

    if fmt == "sequence":
        rows = _sequence_rows(ds, sids, sep, cfg["sft"]["max_sequence_items"])
        add("train", SEQUENCE_TASK, [rows[i] for i in _pick(len(rows), tasks[MAIN_TASK], rng)])
    else:
        for task, weight in tasks.items():
            if weight == 0:
                continue
            rows, skipped = _task_rows(task, ds, sids, titles, sep, "train")
            if skipped:
                counts["skipped_no_title"][task] = skipped
            picked = [rows[i] for i in _pick(len(rows), weight, rng)]
            add("train", task, _fill(picked, templates[task], rng))
    spec = main_prompt_spec(cfg, chat_template=False)
    valid = ds.valid
    limit = conv["max_valid_examples"]
    if limit and valid.height > limit:
        valid = valid.sample(n=limit, seed=seed).sort("user_id")
    add(
        "valid",
        MAIN_TASK if fmt == "prompt" else SEQUENCE_TASK,
        [
            (spec.history_text([sids[i] for i in h]), sids[t])
            for h, t in zip(valid["history"].to_list(), valid["target"].to_list(), strict=True)
        ],
    )
    if not any(f.height for f in frames["train"]):
        raise SidrecError("no training examples: the dataset's train split is empty")
    train = pl.concat(frames["train"]).sample(fraction=1.0, shuffle=True, seed=seed)
    return {"train": train, "valid": pl.concat(frames["valid"])}, counts


def main_prompt_spec(cfg: dict[str, Any], chat_template: bool) -> PromptSpec:
    """The main task's prompt format for a resolved config (valid examples use template 0)."""
    return PromptSpec(
        format=cfg["sft"]["format"],
        template=cfg["convert"]["templates"][MAIN_TASK][0],
        separator=cfg["convert"]["item_separator"],
        chat_template=chat_template,
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
    ds, _ = read_dataset(data)
    table = read_sid_dir(sid)
    section = {"convert": cfg["convert"], "sft": {"format": cfg["sft"]["format"]}}
    run = Run(
        "convert",
        {**section, "seed": cfg["seed"]},
        {"data": str(data), "sid": str(sid)},
        cfg["seed"],
    )
    frames, counts = build_examples(ds, table, cfg, cfg["seed"])
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for name, df in frames.items():
            df.write_parquet(tmp / f"{name}.parquet")
        log(f"examples: {counts['train']} train, {counts['valid']} valid")
        return run.finish(tmp, counts, format=cfg["sft"]["format"])
