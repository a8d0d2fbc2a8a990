"""A simulated week of ``sidrec update`` on the demo data: new items every day, one corrupted day.

From the demo's synthetic catalog and users (``data.synth``):

- ``--days`` x ``--new-per-day`` items (a seeded sample) are held back and arrive one batch a
  day; the base model (the demo profile through SFT, ``--base-epochs`` epochs) never sees them.
- Every user's last three interactions happen on one day: the day the newest of those items
  arrived, or one dealt in turn: two training rows and one held-out row, each keeping only
  items that have arrived by then.
  The base dataset is everything before, without the held-back items.
- Day ``--corrupt-day`` is corrupted: its targets are shuffled across its rows (train and
  valid), so every row pairs a real history with another user's next item.

Then it runs one ``sidrec update`` a day into one state directory and reports the ledger, and
for each day k+1 how many of the serving model's top-10 recommendations (on that day's
held-out users, before that day's update) are items that arrived on day k.

Prints one JSON object.

    python benchmarks/incremental.py [--out-dir DIR] [--days 7] [--new-per-day 40] \\
        [--corrupt-day 4] [--base-epochs 15] [--out FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sidrec.app.pipeline import run_pipeline
from sidrec.app.update import LEDGER_FILE, run_update
from sidrec.core.config import load_config, model_config
from sidrec.core.dataset import EXAMPLES_SCHEMA, write_dataset
from sidrec.core.manifest import Run, git_commit, machine, print_report
from sidrec.data.splits import assemble
from sidrec.data.synth import generate

REPO = Path(__file__).resolve().parents[1]


def _rows(user: str, seq: list[int], arrival: np.ndarray, day: int) -> list[tuple]:
    """The user's rows on ``day``: training targets seq[-3], seq[-2] and the held-out seq[-1],
    each with the history before it, of items that have arrived by ``day``."""
    out = []
    for pos in (len(seq) - 3, len(seq) - 2, len(seq) - 1):
        history = [i for i in seq[max(0, pos - 20) : pos] if arrival[i] <= day]
        if history and arrival[seq[pos]] <= day:
            out.append((user, history, seq[pos], "valid" if pos == len(seq) - 1 else "train"))
    return out


def simulate(
    root: Path, days: int, new_per_day: int, corrupt_day: int, seed: int
) -> tuple[pl.DataFrame, list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]], pl.DataFrame]:
    """The base items, sequences and per day (new items, train rows, valid rows)."""
    items, sequences = generate(2000, 3000, seed)
    rng = np.random.default_rng(seed)
    n = items.height
    late = rng.permutation(n)[: days * new_per_day]
    arrival = np.zeros(n, dtype=np.int64)
    arrival[late] = 1 + np.arange(late.size) // new_per_day
    # base items keep their order, then the held-back ones in order of arrival
    order = np.concatenate([np.flatnonzero(arrival == 0), late])
    new_id = np.empty(n, dtype=np.int64)
    new_id[order] = np.arange(n)
    arrival = arrival[order]
    items = items[order.tolist()].with_columns(pl.Series("item_id", np.arange(n)))
    base_n = n - late.size
    users = sequences["user_id"].to_list()
    seqs = [new_id[s].tolist() for s in sequences["item_ids"].to_list()]
    base_seqs = [[i for i in s[:-3] if arrival[i] == 0] for s in seqs]
    base = pl.DataFrame(
        {"user_id": users, "item_ids": base_seqs, "timestamps": [None] * len(users)},
        schema={
            "user_id": pl.String,
            "item_ids": pl.List(pl.Int64),
            "timestamps": pl.List(pl.Int64),
        },
    ).filter(pl.col("item_ids").list.len() > 0)
    # a user's last interactions happen on the day the newest item among them arrived (new
    # items are interacted with when they arrive), else on a day dealt in turn
    user_day = [max(int(arrival[s[-3:]].max()), 1 + u % days) for u, s in enumerate(seqs)]
    per_day = []
    for d in range(1, days + 1):
        day_seqs = {u: seqs[u] for u in range(len(users)) if user_day[u] == d}
        rows = [r for u, s in day_seqs.items() for r in _rows(users[u], s, arrival, d)]
        frame = pl.DataFrame(
            [r[:3] for r in rows], schema=EXAMPLES_SCHEMA, orient="row"
        ).with_columns(pl.Series("split", [r[3] for r in rows]))
        if d == corrupt_day:  # each row's target is another row's
            frame = frame.with_columns(pl.col("target").shuffle(seed=seed))
        new = items.filter(
            pl.col("item_id").is_between(
                base_n + (d - 1) * new_per_day, base_n + d * new_per_day - 1
            )
        )
        per_day.append(
            (
                new,
                frame.filter(pl.col("split") == "train").drop("split"),
                frame.filter(pl.col("split") == "valid").drop("split"),
            )
        )
    return items[:base_n], per_day, base


def run(
    out_dir: Path,
    days: int = 7,
    new_per_day: int = 40,
    corrupt_day: int = 4,
    base_epochs: float = 15.0,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Build the base model, apply every day, return the ledger and the checks."""
    overrides = overrides or []
    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        [
            f"output_root={out_dir}",
            "run_name=incremental",
            f"sft.epochs={base_epochs}",
            "swanlab.mode=disabled",
            "model.family=lm",  # the LM recipe's daily updates (the demo ships the tree family)
            *overrides,
        ],
    )
    base_items, per_day, base_seqs = simulate(out_dir, days, new_per_day, corrupt_day, cfg["seed"])
    data = out_dir / "incremental" / "data"
    if not (data / "manifest.json").exists():
        ds, skipped = assemble(base_items, base_seqs, "loo", cfg["data"]["max_history"])
        write_dataset(
            data,
            ds,
            Run("benchmark.incremental", {}, {}, cfg["seed"]),
            source="synth-base",
            split={"protocol": "loo", "max_history": cfg["data"]["max_history"]},
            skipped=skipped,
        )
    outputs = run_pipeline(cfg, log=print, start="embeddings", until="sft")
    model = outputs["sft"]
    state = out_dir / "state"
    shutil.rmtree(state, ignore_errors=True)  # a fresh week, on the same base model
    for d, (new, train, valid) in enumerate(per_day, start=1):
        day = out_dir / "days" / f"day-{d}"
        day.mkdir(parents=True, exist_ok=True)
        new.write_parquet(day / "items.parquet")
        train.write_parquet(day / "train.parquet")
        valid.write_parquet(day / "valid.parquet")
        run_update(
            model, day, state, model_config(model, None, ["swanlab.mode=disabled", *overrides])
        )
    with open(state / LEDGER_FILE) as f:
        ledger = list(csv.DictReader(f))
    tops = {}  # day -> the serving model's top-10 items on that day's validation users
    for d in range(2, days + 1):
        preds = pl.read_parquet(
            state / "days" / f"day-{d}" / "eval-serving" / "predictions.parquet"
        )
        tops[d] = [i for row in preds["ranked_items"].to_list() for i in row[:10]]
    appear = []
    for d in range(1, days):
        arrived = set(per_day[d - 1][0]["item_id"].to_list())
        top = tops[d + 1]
        appear.append(
            {
                "arrived_on": d,
                "recommended_on": d + 1,
                "items_arrived": len(arrived),
                "distinct_recommended": len(arrived & set(top)),
                "slots": sum(i in arrived for i in top),
                "users": len(top) // 10,
                "distinct_recommended_later": {
                    f"day-{j}": len(arrived & set(tops[j])) for j in range(d + 2, days + 1)
                },
            }
        )
    return {
        "benchmark": "incremental",
        "machine": machine(),
        "git_commit": git_commit(),
        "settings": {
            "days": days,
            "new_per_day": new_per_day,
            "corrupt_day": corrupt_day,
            "base_epochs": base_epochs,
            "overrides": overrides,
            "base_items": base_items.height,
        },
        "ledger": ledger,
        "new_items_in_next_day_top10": appear,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, help="where to build (default: a temporary directory)")
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--new-per-day", type=int, default=40)
    p.add_argument("--corrupt-day", type=int, default=4)
    p.add_argument("--base-epochs", type=float, default=15.0)
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = a.out_dir or Path(tmp)
        result = run(out_dir, a.days, a.new_per_day, a.corrupt_day, a.base_epochs, a.overrides)
    print_report(result, a.out)


if __name__ == "__main__":
    sys.exit(main())
