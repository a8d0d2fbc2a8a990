"""What every importer of raw interactions shares: the month window, the iterated k-core and
turning the kept events into the dataset's items and time-ordered sequences."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from sidrec.core.dataset import items_frame, sequences_frame
from sidrec.core.errors import SidrecError

TEXT_FIELDS = ("title", "description", "brand", "categories")


def month_bounds(st_year: int, st_month: int, ed_year: int, ed_month: int) -> tuple[int, int]:
    """Unix seconds ``[start, end)`` of the months ``st_year-st_month`` .. ``ed_year-ed_month``
    (both inclusive)."""
    for month in (st_month, ed_month):
        if not 1 <= month <= 12:
            raise SidrecError(f"month must be 1..12, got {month}")
    start = datetime(st_year, st_month, 1, tzinfo=UTC)
    end = datetime(ed_year + ed_month // 12, ed_month % 12 + 1, 1, tzinfo=UTC)
    if end <= start:
        raise SidrecError(f"the window {st_year}-{st_month:02d}..{ed_year}-{ed_month:02d} is empty")
    return int(start.timestamp()), int(end.timestamp())


def k_core(
    events: list[tuple[str, str, int]], user_k: int, item_k: int
) -> list[tuple[str, str, int]]:
    """Drop users with < ``user_k`` and items with < ``item_k`` events, until nothing changes."""
    while True:
        users = Counter(u for u, _, _ in events)
        items = Counter(i for _, i, _ in events)
        kept = [e for e in events if users[e[0]] >= user_k and items[e[1]] >= item_k]
        if len(kept) == len(events):
            return kept
        events = kept


Event = tuple[str, str, int]


def unique_in_window(
    events: Iterable[Event], window: tuple[int, int] | None
) -> tuple[list[Event], dict[str, int]]:
    """The ``(user, item, unix time)`` events inside ``window`` (``[start, end)``; None = all),
    exact repeats dropped, in their order; and how many were outside and how many repeats."""
    kept: list[Event] = []
    seen: set[Event] = set()
    outside = duplicates = 0
    for event in events:
        if window is not None and not window[0] <= event[2] < window[1]:
            outside += 1
        elif event in seen:
            duplicates += 1
        else:
            seen.add(event)
            kept.append(event)
    return kept, {"events_outside_window": outside, "duplicate_events": duplicates}


def core_sequences(
    events: list[Event],
    meta: dict[str, dict[str, Any]],
    user_k: int,
    item_k: int,
    source: Path,
    steps: str,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Items and sequences from the ``events`` whose item has text in ``meta``, after the
    iterated ``user_k`` / ``item_k`` core; with how many events each step removed. ``steps``
    names the earlier filters in the error raised when nothing is left."""
    with_text = [e for e in events if meta.get(e[1])]
    kept = k_core(with_text, user_k, item_k)
    if not kept:
        raise SidrecError(
            f"{source}: no interactions left after {steps} and {user_k}/{item_k}-core filtering"
        )
    items, sequences = build_sequences(kept, meta)
    removed = {
        "events_without_item_text": len(events) - len(with_text),
        "events_removed_by_k_core": len(with_text) - len(kept),
    }
    return items, sequences, removed


def build_sequences(
    events: list[tuple[str, str, int]], meta: dict[str, dict[str, Any]]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Items (sorted by source id, ids 0..N-1, text from ``meta``) and each user's items in time
    order (users sorted; the events' order breaks ties between equal times) from the kept
    ``(user, source item id, unix time)`` events."""
    asins = sorted({a for _, a, _ in events})
    item_id = {a: i for i, a in enumerate(asins)}
    by_user: dict[str, list[tuple[int, int]]] = {}
    for user, asin, ts in events:
        by_user.setdefault(user, []).append((ts, item_id[asin]))
    users = sorted(by_user)
    ordered = [sorted(by_user[u], key=lambda e: e[0]) for u in users]
    items = items_frame(
        {key: [meta[a][key] for a in asins] for key in TEXT_FIELDS} | {"source_id": asins}
    )
    sequences = sequences_frame(
        users, [[i for _, i in s] for s in ordered], [[t for t, _ in s] for s in ordered]
    )
    return items, sequences
