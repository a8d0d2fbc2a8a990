"""Amazon Reviews 2018 per-category raw files -> interactions and item text.

Inputs in ``raw_dir`` (JSON lines, optionally gzip): reviews ``<Name>.json[.gz]`` (or
``<Name>_5.json[.gz]``) with ``reviewerID``, ``asin``, ``unixReviewTime``; metadata
``meta_<Name>.json[.gz]`` with ``asin``, ``title``, ``description``, ``brand``, ``category``.

The recipe (MiniOneRec's): keep reviews whose month lies in [start, end] (both inclusive); drop
exact duplicate events (same user, item and time); drop items whose title is missing, carries
HTML or has more than ``max_title_words`` words; then filter users with fewer than ``user_k`` and
items with fewer than ``user_k`` interactions, repeating until nothing changes.
"""

from __future__ import annotations

import gzip
import html
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
from tqdm import tqdm

from sidrec.core.errors import InputError, SidrecError
from sidrec.data.events import core_sequences, month_bounds, unique_in_window

DOWNLOAD_URL = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2"
_HTML_TAG = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>")


def raw_files(raw_dir: Path, name: str) -> tuple[Path, Path]:
    """The review and metadata files for category ``name`` in ``raw_dir``."""

    def first(candidates: list[str], what: str) -> Path:
        for c in candidates:
            if (raw_dir / c).exists():
                return raw_dir / c
        raise InputError(
            raw_dir, f"no {what} file; expected one of {candidates} (or pass --download)"
        )

    reviews = first([f"{name}{s}.json{z}" for s in ("", "_5") for z in (".gz", "")], "review")
    meta = first([f"meta_{name}.json{z}" for z in (".gz", "")], "metadata")
    return reviews, meta


def download(raw_dir: Path, name: str) -> None:
    """Fetch the category's review and metadata files into ``raw_dir`` (temporary name, rename)."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    for sub, file in (("categoryFiles", f"{name}.json.gz"), ("metaFiles2", f"meta_{name}.json.gz")):
        dest = raw_dir / file
        if dest.exists():
            continue
        tmp = dest.with_name(dest.name + ".part")
        url = f"{DOWNLOAD_URL}/{sub}/{file}"
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, tmp.open("wb") as out:
                bar = tqdm(
                    total=int(resp.headers.get("Content-Length") or 0) or None,
                    unit="B",
                    unit_scale=True,
                    desc=f"download {file}",
                )
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
                bar.close()
        except OSError as e:  # URLError, HTTPError and timeouts are OSErrors
            tmp.unlink(missing_ok=True)
            reason = getattr(e, "reason", None) or e
            raise SidrecError(
                f"could not download {url} ({reason}); fetch it by hand into {raw_dir}"
            ) from None
        tmp.replace(dest)


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(
            tqdm(f, desc=f"read {path.name}", unit=" lines", mininterval=2), start=1
        ):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(
                    path, f"invalid JSON ({e.msg})", row=line_no, row_label="line"
                ) from None
            if not isinstance(obj, dict):
                raise InputError(path, "expected a JSON object", row=line_no, row_label="line")
            yield line_no, obj


def clean_title(title: Any, max_words: int) -> str | None:
    """The title with entities unescaped and spaces collapsed, or None when it must be dropped."""
    if not isinstance(title, str) or _HTML_TAG.search(title):
        return None
    text = " ".join(html.unescape(title).split())
    return text if text and len(text.split()) <= max_words else None


def _plain(value: Any) -> str:
    parts = value if isinstance(value, list) else [value] if value else []
    text = " ".join(_HTML_TAG.sub(" ", html.unescape(str(p))) for p in parts)
    return " ".join(text.split())


def load_amazon18(
    raw_dir: str | Path,
    dataset: str,
    user_k: int = 5,
    item_k: int = 5,
    st_year: int = 2016,
    st_month: int = 10,
    ed_year: int = 2018,
    ed_month: int = 11,
    max_title_words: int = 20,
    download_missing: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Read, clean and filter one category. Returns items, sequences and manifest fields."""
    raw_dir = Path(raw_dir)
    if download_missing:
        download(raw_dir, dataset)
    reviews_path, meta_path = raw_files(raw_dir, dataset)
    lo, hi = month_bounds(st_year, st_month, ed_year, ed_month)

    def read_events() -> Iterator[tuple[str, str, int]]:
        for line_no, r in _json_lines(reviews_path):
            try:
                yield (str(r["reviewerID"]), str(r["asin"]), int(r["unixReviewTime"]))
            except (KeyError, TypeError, ValueError):
                raise InputError(
                    reviews_path,
                    "expected reviewerID, asin and an integer unixReviewTime",
                    row=line_no,
                    row_label="line",
                ) from None

    events, skipped = unique_in_window(read_events(), (lo, hi))

    wanted = {a for _, a, _ in events}
    meta: dict[str, dict[str, Any]] = {}
    dropped_titles = duplicate_meta = 0
    for line_no, m in _json_lines(meta_path):
        asin = m.get("asin")
        if not isinstance(asin, str):
            raise InputError(meta_path, "expected an 'asin' string", row=line_no, row_label="line")
        if asin not in wanted:
            continue
        if asin in meta:
            duplicate_meta += 1
            continue
        title = clean_title(m.get("title"), max_title_words)
        if title is None:
            dropped_titles += 1
            continue
        meta[asin] = {
            "title": title,
            "description": _plain(m.get("description")),
            "brand": _plain(m.get("brand")),
            "categories": [str(c) for c in m.get("category") or []],
        }
    items, sequences, removed = core_sequences(
        events, meta, user_k, item_k, reviews_path, "the time window, title cleaning"
    )
    extra = {
        "filters": {
            "user_k": user_k,
            "item_k": item_k,
            "window": f"{st_year}-{st_month:02d}..{ed_year}-{ed_month:02d}",
            "max_title_words": max_title_words,
        },
        "skipped": {
            **skipped,
            "items_dropped_for_title": dropped_titles,
            "duplicate_metadata_rows": duplicate_meta,
            **removed,
        },
        "minionerec_stem": f"{dataset}_{user_k}_{st_year}-{st_month:02d}-{ed_year}-{ed_month:02d}",
    }
    return items, sequences, extra
