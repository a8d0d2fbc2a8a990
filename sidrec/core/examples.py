"""The SFT examples format (``examples/{train,valid}.parquet``): one row per example, its
task and, where the prompt holds a history, the history's SIDs (for shortening)."""

from __future__ import annotations

import polars as pl

MAIN_TASK = "sid_history"

SEQUENCE_TASK = "sid_sequence"

TASK_FIELDS = {
    "sid_history": ("history",),
    "title_to_sid": ("title",),
    "sid_to_title": ("sid",),
    "sid_history_to_title": ("history",),
    "title_history_to_sid": ("history",),
    "title_history_to_title": ("history",),
}

EXAMPLE_SCHEMA = {
    "prompt": pl.String,
    "completion": pl.String,
    "task": pl.String,
    "template": pl.String,
    "history": pl.List(pl.String),
}
