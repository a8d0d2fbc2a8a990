"""The update state directory (``sidrec update --state``): ``state.json`` names what is
served. ``serve --state`` reads it; ``update`` writes it."""

from __future__ import annotations

from pathlib import Path

from sidrec.core.errors import SidrecError, require_file
from sidrec.core.io import MANIFEST, read_json

STATE_FILE = "state.json"


def resolve_path(state: Path, path: str | None) -> Path | None:
    return None if path is None else (state / path if not Path(path).is_absolute() else Path(path))


def serving(state: str | Path) -> dict[str, Path | None]:
    """What an update state serves: ``model``, the catalog's ``items`` table and ``sid``
    directory, and ``data`` (a dataset directory with user histories, or None)."""
    state = require_file(state, "update state directory")
    s = read_json(require_file(state / STATE_FILE, "update state (run sidrec update first)"))
    return {k: resolve_path(state, v) for k, v in s["serving"].items()}


def registered_catalog(state: str | Path) -> tuple[Path, str]:
    """The base model of an update state (its catalog is items ``0..N-1``; every later item
    was handed out by the registry) and that registry's kind, ``memory`` (the state's
    ``registry.jsonl``) or ``redis``."""
    state = require_file(state, "update state directory")
    s = read_json(require_file(state / STATE_FILE, "update state (run sidrec update first)"))
    if "registry" not in s:
        raise SidrecError(
            f"{state} was written by an older sidrec, whose new items did not go through the "
            "SID registry: start a new --state"
        )
    return Path(s["base_model"]), s["registry"]


def history_files(state: str | Path) -> list[Path]:
    """The user sequences a state has seen, oldest first: the base model's training data's
    (when it is still there), then the state's latest history of every user a day brought."""
    state = Path(state)
    s = read_json(require_file(state / STATE_FILE, "update state (run sidrec update first)"))
    base = Path(s["base_model"]) / MANIFEST
    found = read_json(base).get("inputs", {}).get("data") if base.exists() else None
    files = [Path(found) / "sequences.parquet"] if found else []
    latest = resolve_path(state, s.get("histories"))
    return [f for f in [*files, *([latest] if latest else [])] if f.exists()]
