"""``sidrec data stats``: counts, sequence lengths and popularity skew of a dataset."""

from __future__ import annotations

from typing import Any

import numpy as np

from sidrec.core.dataset import SPLITS, Dataset


def dataset_stats(ds: Dataset) -> dict[str, Any]:
    """Summary numbers of ``ds`` (all plain Python values, JSON-ready).

    Popularity skew: the share of interactions that go to the top 1% / 10% of items, and the
    Gini coefficient of item interaction counts (0 = uniform, 1 = one item takes all).
    """
    lengths = ds.sequences["item_ids"].list.len().to_numpy()
    flat = ds.sequences["item_ids"].explode().to_numpy()
    counts = np.sort(np.bincount(flat, minlength=ds.items.height))[::-1].astype(np.float64)
    total = counts.sum()
    n = len(counts)
    asc = counts[::-1]
    gini = float((2 * np.arange(1, n + 1) - n - 1) @ asc / (n * total)) if total else 0.0
    top = {
        f"top_{p}pct_items_share": float(counts[: max(1, n * p // 100)].sum() / total)
        for p in (1, 10)
    }
    text = {
        f"items_without_{c}": int((ds.items[c] == "").sum())
        for c in ("title", "description", "brand")
    }
    return {
        **ds.counts(),
        "sequence_length": {
            "min": int(lengths.min()),
            "median": float(np.median(lengths)),
            "mean": round(float(lengths.mean()), 3),
            "p90": float(np.percentile(lengths, 90)),
            "max": int(lengths.max()),
        },
        "history_length_mean": {
            s: round(float(ds.split(s)["history"].list.len().mean() or 0), 3) for s in SPLITS
        },
        "popularity": {
            **top,
            "gini": round(gini, 4),
            "items_never_seen": int((counts == 0).sum()),
            "max_item_interactions": int(counts[0]) if n else 0,
        },
        "text": text,
    }


def format_stats(stats: dict[str, Any], title: str) -> str:
    """A readable two-column table of :func:`dataset_stats` output."""
    rows: list[tuple[str, str]] = []

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                add(f"{prefix}.{k}", v)
        else:
            shown = (
                f"{value:,}"
                if isinstance(value, int)
                else (f"{value:.4g}" if isinstance(value, float) else str(value))
            )
            rows.append((prefix, shown))

    for key, value in stats.items():
        add(key, value)
    width = max(len(k) for k, _ in rows)
    vwidth = max(len(v) for _, v in rows)
    line = "-" * (width + vwidth + 3)
    body = "\n".join(f"{k:<{width}}   {v:>{vwidth}}" for k, v in rows)
    return f"{title}\n{line}\n{body}\n{line}"
