"""The experiment ledger, ``<output_root>/experiments.csv``: one row per finished evaluation
(``sidrec evaluate`` and ``sidrec baseline sasrec``), written by the evaluate stage and ranked
by ``sidrec compare --ledger``. The columns are fixed, so rows of every run line up."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import polars as pl
from filelock import FileLock

from sidrec.core.config import plain
from sidrec.core.errors import InputError
from sidrec.core.io import MANIFEST
from sidrec.core.metrics import KS

LEDGER_FILE = "experiments.csv"
METRIC_COLUMNS = [f"{m}@{k}" for m in ("HR", "NDCG") for k in KS]
COLUMNS = [
    "time",
    "run_name",
    "method",
    "model",
    "dataset",
    "sid_method",
    "split",
    "users",
    "config_hash",
    "commit",
    "output",
    *METRIC_COLUMNS,
]


def ledger_path(cfg: dict[str, Any]) -> Path:
    """Where runs made with ``cfg`` are recorded."""
    return Path(cfg["output_root"]) / LEDGER_FILE


def config_hash(cfg: dict[str, Any]) -> str:
    """A short hash of the whole resolved config: equal hashes, equal settings."""
    text = json.dumps(plain(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def describe(path: str | Path, *keys: str) -> str:
    """The given manifest fields of the sidrec output at ``path``, ``:``-joined (those it
    lacks left out); empty when it has no manifest.

    Example: ``describe(data, "source", "dataset")`` -> ``"letter:Beauty"``."""
    try:
        m = json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return ":".join(str(m[k]) for k in keys if m.get(k) is not None)


def _check_header(path: Path, text: str) -> None:
    header = next(csv.reader(io.StringIO(text)), [])
    if header != COLUMNS:
        raise InputError(
            path, f"is not a sidrec experiment ledger: columns {header}, expected {COLUMNS}"
        )


def append_experiment(cfg: dict[str, Any], row: dict[str, Any]) -> Path:
    """Add one run to the ledger of ``cfg`` (created when missing) and return its path.

    ``row`` holds any of :data:`COLUMNS` (``time`` and ``config_hash`` are filled in); the
    file is rewritten through a temporary file under a lock, so concurrent runs and a kill
    never leave a torn row."""
    path = ledger_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config_hash": config_hash(cfg), **row}
    unknown = set(full) - set(COLUMNS)
    if unknown:
        raise ValueError(f"not ledger columns: {sorted(unknown)}")
    with FileLock(path.with_name(path.name + ".lock")):
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        if old:
            _check_header(path, old)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
        if not old:
            writer.writeheader()
        writer.writerow({k: full.get(k, "") for k in COLUMNS})
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(old + buf.getvalue(), encoding="utf-8")
        tmp.replace(path)
    return path


def read_ledger(path: str | Path) -> pl.DataFrame:
    """The ledger at ``path``, metrics as floats (null where a run had fewer beams than K)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no experiment ledger here (evaluations write one)")
    text = path.read_text(encoding="utf-8")
    _check_header(path, text)
    schema = {c: pl.Float64 if c in METRIC_COLUMNS else pl.String for c in COLUMNS}
    schema["users"] = pl.Int64
    return pl.read_csv(io.StringIO(text), schema=schema)
