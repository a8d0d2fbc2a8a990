"""Atomic outputs: a stage writes into a temporary directory that replaces the output only when
complete, under a lock per output directory.

An interrupted run therefore leaves nothing that looks finished; re-running it removes the
leftover temporary directory and starts the stage cleanly. The lock (``.<name>.lock`` beside
the output) keeps a second process from writing, or cleaning up, the same output while the
first is alive; a lock whose process died is free again (the OS releases it).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from sidrec.core.errors import InputError, SidrecError, require_file

MANIFEST = "manifest.json"
# what every evaluation writes (sidrec evaluate, the baselines), read by sidrec compare
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.parquet"
_TMP_MARK = ".tmp-"
_RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15): swap two paths atomically
_AT_FDCWD = -100


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


def lock_path(out: Path) -> Path:
    """The lock file of output directory ``out``."""
    return out.parent / f".{out.name}.lock"


@contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Hold the lock of output directory ``out`` (re-entrant within a process), or raise at
    once if another live process holds it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(out)
    lock = FileLock(path, is_singleton=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SidrecError(
            f"{out}: another sidrec process is writing it (lock {path}); wait for it to finish "
            "or choose another --out"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the paths ``a`` and ``b``; False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        rename2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    fs = os.fsencode
    return rename2(_AT_FDCWD, fs(str(a)), _AT_FDCWD, fs(str(b)), _RENAME_EXCHANGE) == 0


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a directory's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` (and ``root``) to disk, so that what a
    rename publishes survives a power loss, not only a killed process."""
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))


def replace_dir(new: Path, out: Path) -> None:
    """Put directory ``new`` at ``out``, replacing what is there. Where the system can swap two
    paths atomically (Linux) ``out`` is never missing; elsewhere it is, for one rename."""
    if not out.exists():
        new.rename(out)
        return
    if _exchange(new, out):
        shutil.rmtree(new, ignore_errors=True)  # now holds the old output
        return
    old = out.parent / f".{out.name}{_TMP_MARK}old-{os.getpid()}"
    out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` only if the block succeeds.

    Holds ``out``'s lock throughout (see :func:`output_lock`), so the leftovers of earlier
    interrupted runs it removes first are never a live run's; ``out`` is checked with
    :func:`check_output`.
    """
    out = Path(out)
    with output_lock(out):
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
        fsync_tree(tmp)
        replace_dir(tmp, out)
        _fsync(out.parent)


def write_text_durably(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file (named for this process and
    thread, so concurrent writers never share one), flushed to disk, and a rename whose
    directory entry is flushed too."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    _fsync(path.parent)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON, durably (:func:`write_text_durably`)."""
    write_text_durably(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_yaml(path: Path, obj: Any) -> None:
    """Write ``obj`` as YAML, durably (:func:`write_text_durably`)."""
    write_text_durably(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning a parse error into one that names the file and line."""
    p = require_file(path, "JSON file")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(
            p, f"invalid JSON ({e.msg}, column {e.colno})", row=e.lineno, row_label="line"
        ) from None
    except UnicodeDecodeError as e:
        raise InputError(p, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
