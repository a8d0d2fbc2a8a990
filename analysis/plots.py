"""The bad-case report's charts (matplotlib, Agg): one PNG per question."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PLOTS = (
    "failure_patterns",
    "failure_rate",
    "hr_by_segment",
    "sid_quality",
    "rank_distribution",
    "decoding_levels",
)


def _grid(plt: Any, n: int) -> tuple[Any, list[Any]]:
    cols = min(3, max(n, 1))
    rows = -(-max(n, 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat


def _segment_bars(
    plt: Any, report: dict[str, Any], path: Path, series: list[tuple[str, str]]
) -> None:
    """One panel per segment, one group of bars per label, one bar per (key, legend) pair."""
    segments = report["segments"]
    fig, axes = _grid(plt, len(segments))
    for ax, (name, rows) in zip(axes, segments.items(), strict=False):
        x = np.arange(len(rows))
        width = 0.8 / len(series)
        for i, (key, legend) in enumerate(series):
            values = [r[key] if r[key] is not None else 0.0 for r in rows]
            ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=legend)
        ax.set_xticks(x, [r["label"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_title(name)
        ax.legend(fontsize=7)
    _finish(plt, fig, path)


def _finish(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _nothing(ax: Any, text: str) -> None:
    """An empty panel saying why there is no chart."""
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")


def write_plots(report: dict[str, Any], ranks: np.ndarray, beams: int, out: Path) -> None:
    """Write every chart of :data:`PLOTS` into ``out``.

    Args:
        ranks: (N,) each user's target rank in the list (0 = not in it).
        beams: the list length.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    k = report["top_k"]
    _segment_bars(
        plt,
        report,
        out / "failure_patterns.png",
        [("share_of_users", "share of users"), ("share_of_failures", "share of failures")],
    )
    _segment_bars(plt, report, out / "failure_rate.png", [("failure_rate", f"failure rate @{k}")])
    _segment_bars(
        plt,
        report,
        out / "hr_by_segment.png",
        [(f"HR@{k}", "inside"), (f"HR@{k}_rest", "the rest")],
    )

    fig, ax = plt.subplots(figsize=(7, 3.2))
    counts = np.bincount(ranks, minlength=beams + 1)
    ax.bar(np.arange(1, beams + 1), counts[1:], color="tab:blue", label="rank in the list")
    ax.bar([beams + 2], [counts[0]], color="tab:red", label="not in the list")
    ax.axvline(k + 0.5, color="black", lw=1, ls="--", label=f"top {k}")
    ax.set_xlabel("target rank")
    ax.set_ylabel("users")
    ax.legend(fontsize=8)
    ax.set_title("where the target is")
    _finish(plt, fig, out / "rank_distribution.png")

    fig, ax = plt.subplots(figsize=(7, 3.2))
    depth = report["decoding"].get("misses_by_depth")
    if depth:
        ax.barh(list(depth), list(depth.values()), color="tab:orange")
        ax.invert_yaxis()
        ax.set_xlabel("misses")
        ax.set_title("how far the best beam follows the target's SID")
    else:
        _nothing(ax, "no SIDs: decoding depth not computed")
    _finish(plt, fig, out / "decoding_levels.png")

    fig, ax = plt.subplots(figsize=(7, 3.2))
    sq = report.get("sid_quality")
    if sq:
        levels = sq["levels"]
        x = np.arange(len(levels))
        ax.bar(x - 0.2, [lv["utilization"] for lv in levels], 0.4, label="codes used / K")
        ax.bar(x + 0.2, [lv["entropy_pct"] for lv in levels], 0.4, label="entropy / log2 K")
        ax.set_xticks(x, [f"level {chr(97 + i)}" for i in range(len(levels))])
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
        ax.set_title(
            f"SID quality: {sq['shared_sids']} shared SIDs, "
            f"{sq['mean_items_per_prefix']:.2f} items per prefix"
        )
    else:
        _nothing(ax, "no SIDs given")
    _finish(plt, fig, out / "sid_quality.png")
