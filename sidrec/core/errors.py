"""The one error type users see: it names the file, the row and what was expected."""

from __future__ import annotations

from pathlib import Path


class SidrecError(Exception):
    """A problem with the user's input or configuration, reported without a traceback."""


class InputError(SidrecError):
    """Bad input data.

    Example:
        >>> str(InputError("d/x.csv", "expected an integer item_id, got 'a'", row=3))
        'd/x.csv, row 3: expected an integer item_id, got \\'a\\''
    """

    def __init__(
        self,
        path: str | Path,
        message: str,
        row: int | None = None,
        row_label: str = "row",
    ) -> None:
        self.path = str(path)
        self.row = row
        where = self.path if row is None else f"{self.path}, {row_label} {row}"
        super().__init__(f"{where}: {message}")


def require_file(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, or raise an InputError saying which input is missing."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, f"{what} does not exist")
    return p
