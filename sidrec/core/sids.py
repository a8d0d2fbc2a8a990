"""The SID vocabulary and the SID directory format shared by every stage.

A semantic ID is a short sequence of codes, one per level, written as tokens ``<a_12><b_7><c_200>``
(level letters a, b, c, ... as in MiniOneRec and LETTER). A SID directory holds ``index.json``
(MiniOneRec's format), ``sids.parquet`` and ``report.json``.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from sidrec.core.errors import InputError, require_file
from sidrec.core.io import read_json, write_json

LEVEL_LETTERS = string.ascii_lowercase
_TOKEN = re.compile(r"<([a-z])_(\d+)>")

INDEX_FILE = "index.json"
SIDS_FILE = "sids.parquet"
REPORT_FILE = "report.json"


def code_token(level: int, code: int) -> str:
    """The token for ``code`` at ``level`` (0-based): ``code_token(1, 7) == "<b_7>"``."""
    return f"<{LEVEL_LETTERS[level]}_{code}>"


def sid_tokens(codes: Sequence[int]) -> list[str]:
    """Tokens of a SID: ``sid_tokens([12, 7]) == ["<a_12>", "<b_7>"]``."""
    return [code_token(level, int(c)) for level, c in enumerate(codes)]


def sid_string(codes: Sequence[int]) -> str:
    """The SID as one string: ``sid_string([12, 7]) == "<a_12><b_7>"``."""
    return "".join(sid_tokens(codes))


def parse_sid(sid: str | Sequence[str]) -> list[int]:
    """Codes of a SID given as one string or a list of tokens; raises ValueError if malformed.

    Example:
        >>> parse_sid("<a_12><b_7>") == parse_sid(["<a_12>", "<b_7>"]) == [12, 7]
        True
    """
    text = sid if isinstance(sid, str) else "".join(sid)
    tokens = _TOKEN.findall(text)
    if not tokens or "".join(f"<{a}_{c}>" for a, c in tokens) != text:
        raise ValueError(f"expected SID tokens like <a_12><b_7>, got {text!r}")
    for level, (letter, _) in enumerate(tokens):
        if letter != LEVEL_LETTERS[level]:
            raise ValueError(
                f"expected level letter {LEVEL_LETTERS[level]!r} at position {level}, got {text!r}"
            )
    return [int(c) for _, c in tokens]


@dataclass(frozen=True)
class SidTable:
    """Item SIDs: ``codes[i]`` is the code list of item ``i`` (lengths may differ by one level
    where a de-duplication token was appended)."""

    codes: list[list[int]]
    codebook_sizes: list[int]

    @property
    def sids(self) -> list[str]:
        return [sid_string(c) for c in self.codes]


def infer_codebook_sizes(codes: Sequence[Sequence[int]], default: int = 256) -> list[int]:
    """Per level, ``default`` if every code fits, else the largest code + 1."""
    depth = max(len(c) for c in codes)
    return [max(default, 1 + max(c[lv] for c in codes if len(c) > lv)) for lv in range(depth)]


def sid_summary(codes: Sequence[Sequence[int]], codebook_sizes: Sequence[int]) -> dict[str, Any]:
    """Collision and codebook-usage statistics of a SID assignment.

    Args:
        codes: per item, its list of codes.
        codebook_sizes: K per level.

    Returns:
        ``distinct_prefixes`` and the max / mean items per prefix (a prefix = every level but
        the last), ``collision_rate`` (1 - distinct SIDs / items), ``shared_sids`` (SIDs held
        by 2+ items),
        ``items_in_shared_sids``, ``largest_bucket`` (most items behind one SID), and per level
        ``used``, ``utilization`` (used / K), ``entropy_bits`` and ``entropy_pct`` (of log2 K).

    Example:
        >>> s = sid_summary([[0, 1], [0, 1], [1, 0]], [2, 2])
        >>> s["shared_sids"], round(s["collision_rate"], 3), s["levels"][0]["used"]
        (1, 0.333, 2)
    """
    n = len(codes)
    buckets = Counter(tuple(c) for c in codes)
    levels = []
    for lv, k in enumerate(codebook_sizes):
        counts = Counter(c[lv] for c in codes if len(c) > lv)
        total = sum(counts.values())
        entropy = -sum(v / total * math.log2(v / total) for v in counts.values())
        levels.append(
            {
                "level": LEVEL_LETTERS[lv],
                "codebook_size": k,
                "used": len(counts),
                "utilization": len(counts) / k,
                "entropy_bits": entropy,
                "entropy_pct": entropy / math.log2(k) if k > 1 else 0.0,
                "largest_code_share": max(counts.values()) / total,
            }
        )
    shared = [v for v in buckets.values() if v > 1]
    depth = min(len(c) for c in codes)
    prefixes = Counter(tuple(c[: depth - 1]) for c in codes)
    return {
        "items": n,
        "distinct_prefixes": len(prefixes),
        "max_items_per_prefix": max(prefixes.values()),
        "mean_items_per_prefix": n / len(prefixes),
        "distinct_sids": len(buckets),
        "collision_rate": 1 - len(buckets) / n,
        "shared_sids": len(shared),
        "items_in_shared_sids": sum(shared),
        "largest_bucket": max(buckets.values()),
        "levels": levels,
    }


def write_sid_dir(out: Path, table: SidTable, report: dict[str, Any]) -> dict[str, Any]:
    """Write ``index.json``, ``sids.parquet`` and ``report.json`` (plus summary) into ``out``."""
    sids = table.sids
    write_json(out / INDEX_FILE, {str(i): sid_tokens(c) for i, c in enumerate(table.codes)})
    pl.DataFrame(
        {"item_id": range(len(sids)), "codes": table.codes, "sid": sids},
        schema={"item_id": pl.Int64, "codes": pl.List(pl.Int64), "sid": pl.String},
    ).write_parquet(out / SIDS_FILE)
    full = {**report, **sid_summary(table.codes, table.codebook_sizes)}
    write_json(out / REPORT_FILE, full)
    return full


def read_index_json(path: str | Path, n_items: int | None = None) -> SidTable:
    """Read a MiniOneRec/LETTER ``index.json`` (``{"item_id": ["<a_1>", ...]}``).

    Item ids must be exactly 0..N-1 (N = ``n_items`` when given).
    """
    path = require_file(path, "SID index")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise InputError(path, "expected a JSON object mapping item id to a list of SID tokens")
    n = len(raw) if n_items is None else n_items
    codes: list[list[int] | None] = [None] * n
    for key, tokens in raw.items():
        if not key.isdigit() or int(key) >= n:
            raise InputError(path, f"expected item ids 0..{n - 1}, got key {key!r}")
        try:
            codes[int(key)] = parse_sid(tokens)
        except (ValueError, TypeError) as e:
            raise InputError(path, f"item {key}: {e}") from None
    missing = [i for i, c in enumerate(codes) if c is None]
    if missing:
        raise InputError(path, f"{len(missing)} items have no SID (first: item {missing[0]})")
    full = [c for c in codes if c is not None]
    return SidTable(full, infer_codebook_sizes(full))


def read_sid_dir(path: str | Path) -> SidTable:
    """Read the SIDs of a SID directory written by :func:`write_sid_dir`."""
    path = require_file(path, "SID directory")
    sids = pl.read_parquet(require_file(Path(path) / SIDS_FILE, "SID table")).sort("item_id")
    if sids["item_id"].to_list() != list(range(sids.height)):
        raise InputError(Path(path) / SIDS_FILE, "expected item_id to be exactly 0..N-1")
    codes = sids["codes"].to_list()
    report = read_json(Path(path) / REPORT_FILE) if (Path(path) / REPORT_FILE).exists() else {}
    sizes = [lv["codebook_size"] for lv in report.get("levels", [])] or infer_codebook_sizes(codes)
    return SidTable(codes, sizes)
