"""Atomic outputs: a stage writes into a temporary directory that is renamed when complete.

An interrupted run therefore leaves nothing that looks finished; re-running it removes the
leftover temporary directory and starts the stage cleanly.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from sidrec.errors import InputError, SidrecError, require_file

MANIFEST = "manifest.json"
_TMP_MARK = ".tmp-"


def is_complete(out: Path) -> bool:
    """True when ``out`` is a finished sidrec output directory (it holds a manifest)."""
    return (out / MANIFEST).is_file()


def check_output(out: Path, overwrite: bool = False) -> None:
    """Raise unless ``out`` may be (re)written: absent, empty, or complete with ``overwrite``.

    A non-empty directory that is not a sidrec output is never replaced.
    """
    if out.exists():
        if not out.is_dir():
            raise SidrecError(f"{out}: exists and is not a directory")
        if any(out.iterdir()):
            if not is_complete(out):
                raise SidrecError(
                    f"{out}: exists, is not empty and is not a sidrec output; "
                    "choose another --out or remove it"
                )
            if not overwrite:
                raise SidrecError(f"{out}: already complete; pass --overwrite to replace it")


@contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` only if the block succeeds.

    Leftovers of earlier interrupted runs of the same output are removed first; ``out`` is
    checked with :func:`check_output`.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    check_output(out, overwrite)
    for stale in out.parent.glob(f".{out.name}{_TMP_MARK}*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}{_TMP_MARK}{os.getpid()}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}{_TMP_MARK}old-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON, via a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_yaml(path: Path, obj: Any) -> None:
    """Write ``obj`` as YAML, via a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning a parse error into one that names the file and line."""
    p = require_file(path, "JSON file")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(
            p, f"invalid JSON ({e.msg}, column {e.colno})", row=e.lineno, row_label="line"
        ) from None
