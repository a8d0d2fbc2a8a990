"""``sidrec update``: one day of a living catalog, promoted only when it does not hurt.

A day directory holds the day's new items (``items.parquet``, optional: the canonical items
columns, ``item_id`` continuing the catalog) and its interactions as examples
(``train.parquet`` and ``valid.parquet``: ``user_id``, ``history``, ``target``). One update:

1. New items get their ids and SIDs (coded by the frozen quantizer) from the SID registry that
   ``sidrec serve --state`` shares (``update.registry``), and the items registered through the
   service since the last update join the catalog with theirs: no id or SID is handed out
   twice, and existing SIDs never move. A day's rows name its new items by the day's own ids
   (``item_id`` continuing the catalog); they are renumbered to the registry's.
2. Validation = the day's valid rows + ``update.replay_valid`` rows sampled from earlier days'
   (and the base dataset's) validation rows. Training = the day's rows + the backlog of
   rejected days + ``update.replay_train`` rows sampled from earlier training rows.
3. The serving model is evaluated on the validation rows (constrained beam search, as
   ``sidrec evaluate``), fine-tuned briefly at ``update.learning_rate`` (then GRPO with
   ``update.rl``), and the new model is evaluated on the same rows.
4. Promoted when ``update.metric`` drops by at most ``update.tolerance``; otherwise the serving
   model stays and the day's training rows join the backlog, which the next promotion clears.

The state directory holds ``state.json`` (the serving model and catalog, the backlog and the
replay buffers, every decision), ``updates.csv`` (the ledger) and ``days/<day>/`` (each day's
catalog, evaluations and, when promoted, model). ``state.json`` is replaced in one step after
everything it points to is written, so an interrupted update leaves the serving model as it was
and re-running the day starts it cleanly.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from sidrec.core.dataset import (
    EXAMPLES_SCHEMA,
    ITEMS_SCHEMA,
    SEQUENCES_SCHEMA,
    Dataset,
    write_dataset,
)
from sidrec.core.encoder import embed_items
from sidrec.core.errors import InputError, SidrecError, require_file
from sidrec.core.examples import EXAMPLE_SCHEMA
from sidrec.core.io import MANIFEST, output_lock, read_json, write_json, write_text_durably
from sidrec.core.manifest import Run
from sidrec.core.model_dir import ITEMS_FILE, SIDS_DIR, model_sids
from sidrec.core.prompts import PromptSpec
from sidrec.core.sids import parse_sid, read_sid_dir
from sidrec.core.state import STATE_FILE, registered_catalog, resolve_path
from sidrec.core.training import swanlab_run
from sidrec.core.tree_model import TREE_CONFIG, is_tree_model
from sidrec.evaluate.generative import evaluate_model
from sidrec.rq.stage import append_sids
from sidrec.serve.registry import Allocator, PrefixFull, RegistryUnavailable, open_registry
from sidrec.sft.convert import finetune_examples
from sidrec.sft.train import train_sft
from sidrec.sft.tree import train_tree

LEDGER_FILE = "updates.csv"
HISTORIES_FILE = "histories.parquet"
LEDGER_COLUMNS = (
    "day",
    "metric",
    "old",
    "new",
    "decision",
    "train_rows",
    "fresh_rows",
    "backlog_rows",
    "replay_train_rows",
    "valid_rows",
    "replay_valid_rows",
    "new_items",
    "items",
    "backlog_after",
    "seconds",
)


def _initial_state(model: Path, registry: str) -> dict[str, Any]:
    """A new state serving ``model`` and its own catalog, its new items registered in a
    ``registry`` (``memory``: the state's file; ``redis``); the replay buffers start from its
    training data's train and valid rows when that dataset is still there."""
    if registry not in ("memory", "redis"):
        raise SidrecError(f"update.registry must be memory or redis, got {registry!r}")
    manifest = read_json(require_file(model / MANIFEST, "model manifest"))
    data = manifest.get("inputs", {}).get("data")
    data = str(Path(data).resolve()) if data and (Path(data) / "valid.parquet").exists() else None
    return {
        "base_model": str(model),
        "registry": registry,
        "serving": {
            "model": str(model),
            "items": str(model / ITEMS_FILE),
            "sid": str(model / SIDS_DIR),
            "data": data,
        },
        "backlog": None,
        "replay": {
            "valid": str(Path(data) / "valid.parquet") if data else None,
            "train": str(Path(data) / "train.parquet") if data else None,
        },
        "days": [],
    }


def _examples(path: Path | None) -> pl.DataFrame:
    if path is None:
        return pl.DataFrame(schema=EXAMPLES_SCHEMA)
    return pl.read_parquet(path).select(list(EXAMPLES_SCHEMA)).cast(EXAMPLES_SCHEMA)


def _check_rows(df: pl.DataFrame, path: Path, n_items: int) -> pl.DataFrame:
    missing = [c for c in EXAMPLES_SCHEMA if c not in df.columns]
    if missing:
        raise InputError(path, f"expected columns {list(EXAMPLES_SCHEMA)}, missing {missing}")
    try:
        df = df.select(list(EXAMPLES_SCHEMA)).cast(EXAMPLES_SCHEMA)
    except pl.exceptions.PolarsError as e:
        raise InputError(path, f"expected user_id, history (item ids), target: {e}") from None
    for row, (h, t) in enumerate(zip(df["history"].to_list(), df["target"].to_list(), strict=True)):
        if not h:
            raise InputError(path, "expected a non-empty history", row=row)
        bad = [i for i in [*h, t] if i is None or not 0 <= i < n_items]
        if bad:
            raise InputError(
                path, f"unknown item id {bad[0]} (the catalog has items 0..{n_items - 1})", row=row
            )
    return df


def read_day(
    day: Path, n_items: int, sources: Sequence[str] = ()
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The new items, train rows and valid rows of a day directory, checked against a catalog
    of ``n_items`` items whose source ids are ``sources``; raises naming the file and the
    row."""
    day = require_file(day, "day directory")
    items_file = day / "items.parquet"
    items = pl.DataFrame(schema=ITEMS_SCHEMA)
    if items_file.exists():
        raw = pl.read_parquet(items_file)
        if "item_id" not in raw.columns or "source_id" not in raw.columns:
            raise InputError(items_file, f"expected columns {list(ITEMS_SCHEMA)}")
        for name, dtype in ITEMS_SCHEMA.items():
            if name not in raw.columns:
                empty = [] if name == "categories" else ""
                raw = raw.with_columns(pl.Series(name, [empty] * raw.height, dtype=dtype))
        items = raw.select(list(ITEMS_SCHEMA)).cast(ITEMS_SCHEMA)
        want = list(range(n_items, n_items + items.height))
        for row, (got, expected) in enumerate(zip(items["item_id"].to_list(), want, strict=True)):
            if got != expected:
                raise InputError(
                    items_file,
                    f"expected item_id {expected}: new items continue the catalog's ids "
                    f"(0..{n_items - 1}), in order",
                    row=row,
                )
        seen = set(sources)
        for row, source in enumerate(items["source_id"].to_list()):
            if not source or source in seen:
                what = "empty" if not source else f"{source!r} is already in the catalog or the day"
                raise InputError(items_file, f"expected a new, unique source_id: {what}", row=row)
            seen.add(source)
    grown = n_items + items.height
    train = _check_rows(
        pl.read_parquet(require_file(day / "train.parquet", "day's train rows")),
        day / "train.parquet",
        grown,
    )
    valid = _check_rows(
        pl.read_parquet(require_file(day / "valid.parquet", "day's valid rows")),
        day / "valid.parquet",
        grown,
    )
    if valid.height == 0:
        raise InputError(day / "valid.parquet", "expected the day's held-out rows (it is empty)")
    return items, train, valid


def _sample(df: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    return df if df.height <= n else df.sample(n=n, seed=seed)


def _sequences(rows: pl.DataFrame) -> pl.DataFrame:
    """One sequence per user: its longest history and that row's target."""
    longest = (
        rows.with_columns(pl.col("history").list.len().alias("n"))
        .sort("n", descending=True)
        .unique("user_id", keep="first", maintain_order=True)
    )
    seqs = [[*h, t] for h, t in zip(longest["history"], longest["target"], strict=True)]
    return pl.DataFrame(
        {"user_id": longest["user_id"], "item_ids": seqs, "timestamps": [None] * longest.height},
        schema=SEQUENCES_SCHEMA,
    )


def _finetune_config(cfg: dict[str, Any], model: Path) -> dict[str, Any]:
    """The brief fine-tune: from ``model``, at ``update``'s learning rate and length (an LM
    without validation inside training: the update validates both models itself)."""
    u = cfg["update"]
    ft = copy.deepcopy(cfg)
    ft["model"]["name_or_path"] = str(model)
    ft["sft"].update(
        learning_rate=u["learning_rate"],
        epochs=u["epochs"],
        max_steps=u["max_steps"],
        warmup_ratio=u["warmup_ratio"],
        select_by="loss",
        early_stopping_patience=0,
    )
    ft["evaluate"].update(split="valid", max_users=0)
    # a tree model: from the serving one (its catalog grown), whole epochs, the best one kept
    ft["tree"].update(
        init=str(model),
        learning_rate=u["learning_rate"],
        epochs=max(1, math.ceil(u["epochs"])),
        patience=0,
        max_minutes=0,
        teacher=None,
    )
    return ft


def _write_examples(
    out: Path, rows: pl.DataFrame, table_sids: list[str], spec: PromptSpec, data: Path, sid: Path
) -> None:
    out.mkdir(parents=True)
    finetune_examples(rows, table_sids, spec).write_parquet(out / "train.parquet")
    pl.DataFrame(schema=EXAMPLE_SCHEMA).write_parquet(out / "valid.parquet")
    spec.save(out)
    inputs = {"data": str(data), "sid": str(sid)}
    write_json(out / MANIFEST, {"format": spec.format, "inputs": inputs})


def _ledger(state: Path, days: list[dict[str, Any]]) -> None:
    """Write ``updates.csv`` from the state's days (durably; rewritten on every run, so a kill
    between ``state.json`` and the ledger heals the next time)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, LEDGER_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: d[k] for k in LEDGER_COLUMNS} for d in days)
    write_text_durably(state / LEDGER_FILE, text.getvalue())


def day_hash(day: Path) -> str:
    """The content hash of a day directory's files (names and bytes): what identifies a day."""
    digest = hashlib.sha256()
    for f in sorted(p for p in day.iterdir() if p.is_file()):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def _applied(days: list[dict[str, Any]], name: str, digest: str) -> tuple[dict | None, str]:
    """The day already applied with these contents (None if none), and the name to apply a
    new one under: the folder's, or with the content hash added when a day of that name
    with other contents (an earlier version, now corrected) was applied."""
    for d in days:
        if d.get("content_hash", digest if d["day"] == name else None) == digest:
            return d, name
    taken = {d["day"] for d in days}
    return None, name if name not in taken else f"{name}-{digest[:8]}"


def run_update(
    model: str | Path, day: str | Path, state: str | Path, cfg: dict[str, Any]
) -> dict[str, Any]:
    """Apply one day to the update state ``state`` (created serving ``model`` when new);
    returns the day's ledger row. A day already applied is not applied again."""
    u = cfg["update"]
    if u["tolerance"] < 0 or u["replay_valid"] < 0 or u["replay_train"] < 0:
        raise SidrecError(
            "update.tolerance, update.replay_valid and update.replay_train must be >= 0"
        )
    if u["fresh_repeats"] < 1:
        raise SidrecError(f"update.fresh_repeats must be >= 1, got {u['fresh_repeats']}")
    model, day, state = Path(model).resolve(), Path(day).resolve(), Path(state)
    with output_lock(state):
        state.mkdir(parents=True, exist_ok=True)
        file = state / STATE_FILE
        s = (
            read_json(file)
            if file.exists()
            else _initial_state(require_file(model, "model"), u["registry"])
        )
        if "registry" not in s:
            registered_catalog(state)  # names the problem: a state of an older sidrec
        if s["base_model"] != str(model):
            raise SidrecError(
                f"{state} updates the model {s['base_model']}, not --model {model}; give that "
                "one, or a new --state"
            )
        _ledger(state, s["days"])
        done, name = _applied(s["days"], day.name, day_hash(require_file(day, "day directory")))
        if done is not None:
            print(f"sidrec update: day {done['day']} was applied already ({done['decision']})")
            return done
        if name != day.name:
            print(f"sidrec update: {day.name} was applied with other contents; applying as {name}")
        return _apply(cfg, s, state, day, name)


def rollback(state: str | Path) -> dict[str, Any]:
    """Serve again the model promoted before the serving one (the base model before the first
    promotion): the serving model's day is marked ``rolled back`` in the ledger and the next
    update starts from the model restored. The catalog stays as it is (new items are served
    by the restored model, as after a rejected day). Returns what serves now."""
    state = Path(state)
    with output_lock(state):
        s = read_json(require_file(state / STATE_FILE, "update state (run sidrec update first)"))
        current = s["serving"]["model"]
        promoted = [d for d in s["days"] if d["decision"] == "promoted"]
        serving_day = next((d for d in promoted if f"days/{d['day']}/model" == current), None)
        if serving_day is None:
            raise SidrecError(f"{state} serves its base model: there is nothing to roll back")
        earlier = promoted[: promoted.index(serving_day)]
        target = f"days/{earlier[-1]['day']}/model" if earlier else s["base_model"]
        if not (state / target).exists():  # an absolute base model path stays as it is
            raise SidrecError(
                f"{state / target} is gone (pruned by update.keep_days?): cannot roll back to it"
            )
        serving_day["decision"] = "rolled back"
        s["serving"]["model"] = target
        write_json(state / STATE_FILE, s)
        _ledger(state, s["days"])
    print(f"sidrec update: rolled back day {serving_day['day']}; serving {target}")
    return {"rolled_back": serving_day["day"], "serving": target}


def _register_day(
    cfg: dict[str, Any],
    s: dict[str, Any],
    state: Path,
    catalog: tuple[pl.DataFrame, Path],
    new_items: pl.DataFrame,
    where: Path,
    out: Path,
) -> tuple[pl.DataFrame, dict[int, int]]:
    """Register the day's new items (``where`` names their file) in the state's registry,
    coded by the frozen quantizer from their text, and take every item registered since the
    serving ``catalog`` (items table, SID directory) into it, ids and SIDs kept. Writes the
    grown SID directory into ``out``; returns the grown items table and the item id the
    registry gave each of the day's ids."""
    old_items, old_sid = catalog
    base = Path(s["base_model"])
    registry, _ = open_registry(cfg, base, state, s["registry"])
    have = old_items.height - registry.n_base  # registered items the catalog already holds
    held = registry.version()
    if held < have:
        raise RegistryUnavailable(
            f"the SID registry holds {held} items but the catalog of {state} "
            f"took {have}: it lost data; restore it before updating"
        )
    alloc = Allocator(old_sid, model_sids(base)[0].codes, cfg["serve"]["prefix_capacity"])
    ids: dict[int, int] = {}
    if new_items.height:
        x, _, _ = embed_items(new_items, cfg["embed"])
        day = zip(new_items["item_id"], new_items["source_id"], new_items["title"], strict=True)
        for row, (local, source, title) in enumerate(day):
            try:
                got = alloc.register(registry, x[row : row + 1], source, title, where)
                ids[local] = got.item_id
            except PrefixFull as e:
                raise InputError(where, f"{e} (serve.prefix_capacity)", row=row) from None
    entries = registry.since(have)
    if entries and entries[0].item_id != old_items.height:
        raise SidrecError(f"the registry's item {entries[0].item_id} is out of order")
    append_sids(old_sid, [parse_sid(e.sid) for e in entries], out)
    ours = {r["source_id"]: r for r in new_items.iter_rows(named=True)}
    empty = {"description": "", "brand": "", "categories": []}
    rows = [
        {
            **ours.get(e.source_id, {**empty, "title": e.title}),
            "item_id": e.item_id,
            "source_id": e.source_id,
        }
        for e in entries
    ]
    grown = pl.DataFrame(rows, schema=ITEMS_SCHEMA) if rows else new_items.clear()
    return pl.concat([old_items, grown.select(list(ITEMS_SCHEMA))]), ids


def _renumber(rows: pl.DataFrame, ids: dict[int, int]) -> pl.DataFrame:
    """``rows`` with the day's item ids replaced by those the registry gave."""
    if all(k == v for k, v in ids.items()):
        return rows
    old, new = list(ids), list(ids.values())
    return rows.with_columns(
        pl.col("history").list.eval(pl.element().replace(old, new)),
        pl.col("target").replace(old, new),
    )


class _Rows(NamedTuple):
    """The rows a day trains and validates on, and where they came from."""

    train: pl.DataFrame  # the day's, the backlog, fresh rows repeated, replayed
    valid: pl.DataFrame  # the day's and replayed
    backlog: pl.DataFrame
    replay_train: pl.DataFrame  # the whole buffers
    replay_valid: pl.DataFrame
    train_replay: pl.DataFrame  # what was sampled from them
    valid_replay: pl.DataFrame
    fresh: pl.DataFrame  # rows holding items the serving model never saw


def _day_rows(
    u: dict[str, Any], s: dict[str, Any], state: Path, known: int, day: tuple, seed: int
) -> _Rows:
    """Training and validation rows of a day (``day`` = its train and valid rows): rows with
    items the serving model (which knows ``known`` items) never saw count
    ``update.fresh_repeats`` times; replay samples come from the state's buffers."""
    day_train, day_valid = day
    backlog = _examples(resolve_path(state, s["backlog"]))
    replay_train = _examples(resolve_path(state, s["replay"]["train"]))
    replay_valid = _examples(resolve_path(state, s["replay"]["valid"]))
    train_replay = _sample(replay_train, u["replay_train"], seed)
    valid_replay = _sample(replay_valid, u["replay_valid"], seed)
    fresh = (pl.col("target") >= known) | (pl.col("history").list.max() >= known)
    news = pl.concat([day_train, backlog]).filter(fresh)
    train = pl.concat([day_train, backlog, *[news] * (u["fresh_repeats"] - 1), train_replay])
    valid = pl.concat([day_valid, valid_replay])
    return _Rows(
        train, valid, backlog, replay_train, replay_valid, train_replay, valid_replay, news
    )


def _compare(cfg: dict[str, Any], serving: Path, work: Path) -> tuple[float, float, Path]:
    """Evaluate the serving model, fine-tune it (then GRPO with ``update.rl``), evaluate the
    candidate on the same rows; returns the metric before and after, and the candidate."""
    ft = _finetune_config(cfg, serving)
    metric = cfg["update"]["metric"]
    data = work / "data"
    old = evaluate_model(serving, data, work / "sid", work / "eval-serving", ft)
    if metric not in old["metrics"]:
        raise SidrecError(f"update.metric={metric!r} is not one of {list(old['metrics'])}")
    if is_tree_model(serving):
        train_tree(data, work / "sid", work / "model", ft, overwrite=True)
    else:
        train_sft(work / "examples", work / "model", ft, overwrite=True)
    candidate = work / "model"
    if cfg["update"]["rl"]:
        from sidrec.rl.train import train_rl

        train_rl(work / "model", data, work / "model-rl", ft, overwrite=True)
        candidate = work / "model-rl"
    new = evaluate_model(candidate, data, None, work / "eval-candidate", ft)
    return old["metrics"][metric], new["metrics"][metric], candidate


def _write_buffers(out: Path, rows: _Rows, day: tuple, promoted: bool, u: dict, seed: int) -> None:
    """The next day's replay buffers, and the backlog when the day was not learned."""
    day_train, day_valid = day
    buffer = u["replay_buffer"]
    pl.concat([rows.replay_valid, day_valid]).pipe(_sample, buffer, seed).write_parquet(
        out / "replay_valid.parquet"
    )
    learned = (
        pl.concat([day_train, rows.backlog]) if promoted else pl.DataFrame(schema=EXAMPLES_SCHEMA)
    )
    pl.concat([rows.replay_train, learned]).pipe(_sample, buffer, seed).write_parquet(
        out / "replay_train.parquet"
    )
    if not promoted:
        pl.concat([rows.backlog, day_train]).write_parquet(out / "backlog.parquet")


def _write_histories(state: Path, s: dict[str, Any], day_rows: pl.DataFrame, out: Path) -> None:
    """Every user's latest history: the state's so far, a user of the day's own rows (not the
    replayed ones, which are older) taking the day's."""
    before = resolve_path(state, s.get("histories"))
    known = pl.read_parquet(before) if before else pl.DataFrame(schema=SEQUENCES_SCHEMA)
    merged = pl.concat([known, _sequences(day_rows)]).unique("user_id", keep="last")
    merged.sort("user_id").write_parquet(out)


def prune_days(state: Path, s: dict[str, Any], keep: int) -> list[str]:
    """Delete the folders of every day but the last ``keep`` (0: keep all), except the
    serving model when an older day promoted it; the ledger and ``state.json`` keep every
    day's row. Returns the days pruned."""
    if keep < 0:
        raise SidrecError(f"update.keep_days must be >= 0, got {keep}")
    serving = Path(s["serving"]["model"])
    pruned = []
    for d in s["days"][:-keep] if keep else []:
        folder = state / "days" / d["day"]
        if not folder.exists():
            continue
        for part in folder.iterdir():
            if Path("days", d["day"], part.name) == serving:
                continue
            shutil.rmtree(part) if part.is_dir() else part.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()
        pruned.append(d["day"])
    return pruned


def _counts(
    rows: _Rows, day: tuple[pl.DataFrame, pl.DataFrame], new_items: int, items: int, promoted: bool
) -> dict[str, int]:
    """The ledger's row counts of a day."""
    day_train, day_valid = day
    return {
        "train_rows": day_train.height,
        "fresh_rows": rows.fresh.height,
        "backlog_rows": rows.backlog.height,
        "replay_train_rows": rows.train_replay.height,
        "valid_rows": day_valid.height,
        "replay_valid_rows": rows.valid_replay.height,
        "new_items": new_items,
        "items": items,
        "backlog_after": 0 if promoted else rows.backlog.height + day_train.height,
    }


def _report(cfg: dict[str, Any], row: dict[str, Any], step: int) -> None:
    """The day's decision on SwanLab and in the terminal."""
    metric = row["metric"]
    dash = swanlab_run(cfg, "update")
    if dash is not None:
        dash.log(
            {
                f"update/{metric}_old": row["old"],
                f"update/{metric}_new": row["new"],
                "update/promoted": int(row["decision"] == "promoted"),
                "update/backlog_rows": row["backlog_after"],
                "update/items": row["items"],
            },
            step=step,
        )
        dash.finish()
    print(
        f"sidrec update: day {row['day']}: {metric} {row['old']:.4f} -> {row['new']:.4f}, "
        f"{row['decision']} (backlog {row['backlog_after']} rows, {row['items']:,} items)"
    )


def _apply(cfg: dict[str, Any], s: dict[str, Any], state: Path, day: Path, name: str) -> dict:
    u, seed = cfg["update"], cfg["seed"] + len(s["days"])
    started = time.time()
    point = {k: resolve_path(state, v) for k, v in s["serving"].items()}
    tree = is_tree_model(point["model"])
    if tree and u["rl"]:
        raise SidrecError(
            "update.rl: the update's GRPO step trains LM models; a tree model updates with rl false"
        )
    old_items = pl.read_parquet(point["items"]).select(list(ITEMS_SCHEMA)).cast(ITEMS_SCHEMA)
    new_items, day_train, day_valid = read_day(
        day, old_items.height, old_items["source_id"].to_list()
    )
    out = state / "days" / name
    work = state / "work" / name
    for stale in (out, work):  # what an interrupted run of this day left: start it cleanly
        shutil.rmtree(stale, ignore_errors=True)
    work.mkdir(parents=True)
    run = Run("update", cfg, {"model": str(point["model"]), "day": str(day)}, seed)
    catalog, where = (old_items, point["sid"]), day / "items.parquet"
    items, ids = _register_day(cfg, s, state, catalog, new_items, where, work / "sid")
    day_train, day_valid = _renumber(day_train, ids), _renumber(day_valid, ids)
    known = len(read_sid_dir(Path(point["model"]) / SIDS_DIR).codes)
    rows = _day_rows(u, s, state, known, (day_train, day_valid), seed)
    spec = None if tree else PromptSpec.load(point["model"])
    max_history = read_json(point["model"] / TREE_CONFIG)["max_len"] if tree else spec.max_history
    seqs = _sequences(pl.concat([rows.train, rows.valid]))
    ds = Dataset(items, seqs, rows.train, rows.valid, rows.valid)
    data = work / "data"
    split = {"protocol": "update", "max_history": max_history}
    data_run = Run("update.data", {}, {"day": str(day)}, seed)
    write_dataset(data, ds, data_run, source="update", split=split)
    sids = read_sid_dir(work / "sid").sids
    if spec is not None:
        _write_examples(work / "examples", rows.train, sids, spec, data, work / "sid")
    before, after, candidate = _compare(cfg, point["model"], work)
    promoted = after >= before - u["tolerance"]

    # everything the new state points to is written before the state itself
    out.mkdir(parents=True)
    for part in ("data", "sid", "eval-serving", "eval-candidate"):
        (work / part).rename(out / part)
    if promoted:
        candidate.rename(out / "model")
    rel = f"days/{name}"
    _write_buffers(out, rows, (day_train, day_valid), promoted, u, seed)
    _write_histories(state, s, pl.concat([day_train, day_valid]), out / HISTORIES_FILE)
    row = {
        "day": name,
        "metric": u["metric"],
        "old": round(before, 6),
        "new": round(after, 6),
        "decision": "promoted" if promoted else "rejected",
        **_counts(rows, (day_train, day_valid), new_items.height, items.height, promoted),
        "seconds": round(time.time() - started, 1),
        "content_hash": day_hash(day),
    }
    run.finish(out, {k: row[k] for k in LEDGER_COLUMNS if k not in ("day", "metric")})
    serving = {"items": f"{rel}/data/{ITEMS_FILE}", "sid": f"{rel}/sid", "data": f"{rel}/data"}
    s = {
        **s,
        "serving": {"model": f"{rel}/model" if promoted else s["serving"]["model"], **serving},
        "backlog": None if promoted else f"{rel}/backlog.parquet",
        "replay": {"valid": f"{rel}/replay_valid.parquet", "train": f"{rel}/replay_train.parquet"},
        "histories": f"{rel}/{HISTORIES_FILE}",
        "days": [*s["days"], row],
    }
    write_json(state / STATE_FILE, s)
    _ledger(state, s["days"])
    shutil.rmtree(work, ignore_errors=True)
    prune_days(state, s, u["keep_days"])
    _report(cfg, row, len(s["days"]))
    return row
