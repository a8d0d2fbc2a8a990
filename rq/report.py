"""SID quality: a terminal table and a PNG of code usage per level."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def format_report(report: dict[str, Any]) -> str:
    """The report as a table: one row per level, then collisions and timing."""
    head = f"{'level':<6}{'used/K':>12}{'util':>8}{'entropy':>10}{'% log2K':>9}{'top code':>10}"
    rows = [
        f"{lv['level']:<6}{lv['used']:>7}/{lv['codebook_size']:<4}{lv['utilization']:>8.1%}"
        f"{lv['entropy_bits']:>10.2f}{lv['entropy_pct']:>9.1%}{lv['largest_code_share']:>10.2%}"
        for lv in report["levels"]
    ]
    tail = [
        f"method {report.get('method', '?')}: {report['items']:,} items, "
        f"{report['distinct_sids']:,} distinct SIDs, {report['shared_sids']} shared "
        f"(largest bucket {report['largest_bucket']})",
        f"{report['distinct_prefixes']:,} distinct prefixes (all levels but the last), "
        f"{report['mean_items_per_prefix']:.2f} items per prefix on average, "
        f"{report['max_items_per_prefix']} at most",
    ]
    if "collision_rate_before_dedup" in report:
        tail.append(
            f"collision rate {report['collision_rate_before_dedup']:.2%} before "
            f"de-duplication ({report['dedup']}), {report['collision_rate']:.2%} after"
        )
    if "reconstruction_error" in report:
        tail.append(
            f"relative reconstruction error {report['reconstruction_error']:.4f}, "
            f"{report['seconds']:.1f} s"
        )
    return "\n".join([head, *rows, *tail])


def plot_code_usage(codes: list[list[int]], sizes: list[int], path: Path, title: str) -> None:
    """Bar chart per level of how many items use each code, sorted, with the uniform line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sizes), figsize=(4 * len(sizes), 3), squeeze=False)
    for lv, (ax, k) in enumerate(zip(axes[0], sizes, strict=True)):
        used = [c[lv] for c in codes if len(c) > lv]
        counts = np.sort(np.bincount(used, minlength=k))[::-1]
        ax.bar(np.arange(k), counts, width=1.0)
        ax.axhline(len(used) / k, color="red", lw=1, label="uniform")
        ax.set_title(f"level {chr(97 + lv)}: {int((counts > 0).sum())}/{k} codes used")
        ax.set_xlabel("code (sorted by use)")
        ax.set_ylabel("items")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
