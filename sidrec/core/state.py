"""The update state directory (``sidrec update --state``): ``state.json`` names what is
served. ``serve --state`` reads it; ``update`` writes it."""

from __future__ import annotations

from pathlib import Path

from sidrec.core.errors import require_file
from sidrec.core.io import read_json

STATE_FILE = "state.json"


def resolve_path(state: Path, path: str | None) -> Path | None:
    return None if path is None else (state / path if not Path(path).is_absolute() else Path(path))


def serving(state: str | Path) -> dict[str, Path | None]:
    """What an update state serves: ``model``, the catalog's ``items`` table and ``sid``
    directory, and ``data`` (a dataset directory with user histories, or None)."""
    state = require_file(state, "update state directory")
    s = read_json(require_file(state / STATE_FILE, "update state (run sidrec update first)"))
    return {k: resolve_path(state, v) for k, v in s["serving"].items()}
