"""``sidrec compare``: evaluations side by side, and the experiment ledger ranked.

Every run is compared with the first (the baseline) on every metric both report: the values,
the absolute and relative deltas, and, where both runs ranked the same users (their
``predictions.parquet`` files hold the same users in the same order), a paired bootstrap over
users of the HR@K and NDCG@K differences: a delta counts as significant when its 95% interval
excludes 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sidrec.core.errors import InputError, SidrecError
from sidrec.core.io import PREDICTIONS_FILE, RESULTS_FILE, atomic_dir, read_json, write_json
from sidrec.core.ledger import METRIC_COLUMNS, read_ledger
from sidrec.core.manifest import Run
from sidrec.core.metrics import paired_difference

COMPARISON_FILE = "comparison.json"
CHART_FILE = "comparison.png"


@dataclass
class Evaluation:
    """One evaluation output: its label, ``results.json`` and, when present, the users and
    the target's rank for each (0 = missed)."""

    label: str
    results: dict[str, Any]
    users: list[str] | None
    ranks: np.ndarray | None


def load_evaluation(path: str | Path) -> Evaluation:
    """The evaluation at ``path``: a ``results.json`` file or the directory holding it."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    results = read_json(file)
    if not isinstance(results, dict) or not isinstance(results.get("metrics"), dict):
        raise InputError(file, "has no `metrics`; expected the results.json of an evaluation")
    label = f"{file.parent.parent.name}/{file.parent.name}"
    pred = file.parent / PREDICTIONS_FILE
    if not pred.is_file():
        return Evaluation(label, results, None, None)
    frame = pl.read_parquet(pred)
    missing = {"user_id", "rank"} - set(frame.columns)
    if missing:
        raise InputError(pred, f"lacks the columns {sorted(missing)}")
    return Evaluation(
        label, results, frame["user_id"].to_list(), frame["rank"].fill_null(0).to_numpy()
    )


def _significance(base: Evaluation, run: Evaluation) -> dict[str, Any] | str:
    """Paired bootstrap of ``run`` minus ``base`` at every K both report, or why not."""
    if base.users is None or run.users is None:
        return "no predictions.parquet beside both results"
    if base.users != run.users:
        return "the runs ranked different users"
    ks = sorted(set(base.results["ks"]) & set(run.results["ks"]))
    out: dict[str, Any] = {}
    for k in ks:
        for metric, d in paired_difference(run.ranks, base.ranks, k).items():
            out[metric] = {**d, "significant": not d["ci95_low"] <= 0 <= d["ci95_high"]}
    return out


def compare(paths: list[str | Path], out: str | Path | None = None) -> dict[str, Any]:
    """Compare the evaluations at ``paths`` with the first; with ``out``, also write
    ``comparison.json`` and a bar chart ``comparison.png`` there. Returns the comparison."""
    if len(paths) < 2:
        raise SidrecError("sidrec compare needs a baseline and at least one other run")
    runs = [load_evaluation(p) for p in paths]
    base = runs[0]
    names = list(base.results["metrics"])
    table = []
    for i, run in enumerate(runs[1:], start=1):
        rows = {}
        for name in names:
            if name not in run.results["metrics"]:
                continue
            a, b = base.results["metrics"][name], run.results["metrics"][name]
            rows[name] = {
                "baseline": a,
                "run": b,
                "delta": b - a,
                "relative": (b - a) / a if a else None,
            }
        table.append(
            {
                "run": run.label,
                "path": str(paths[i]),
                "users": run.results.get("users"),
                "metrics": rows,
                "paired": _significance(base, run),
            }
        )
    result = {
        "baseline": base.label,
        "baseline_path": str(paths[0]),
        "baseline_users": base.results.get("users"),
        "runs": table,
    }
    if out is not None:
        run = Run("compare", {}, {f"run_{i}": str(p) for i, p in enumerate(paths)}, None)
        with atomic_dir(out, overwrite=True) as tmp:
            write_json(tmp / COMPARISON_FILE, result)
            plot_comparison(runs, names, tmp / CHART_FILE)
            run.finish(tmp, {"runs": len(runs)})
    return result


def plot_comparison(runs: list[Evaluation], names: list[str], path: Path) -> None:
    """Grouped bars: one group per metric, one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / len(runs)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 3.5))
    for i, run in enumerate(runs):
        values = [run.results["metrics"].get(n, 0.0) for n in names]
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, values, width, label=run.label)
    ax.set_xticks(x, names, rotation=30)
    ax.set_ylabel("value")
    ax.set_title(f"each run against {runs[0].label}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_comparison(result: dict[str, Any]) -> str:
    """The comparison as a plain-text table per run."""
    lines = []
    for run in result["runs"]:
        lines.append(f"{run['run']} against {result['baseline']}:")
        lines.append(f"  {'metric':<9} {'baseline':>9} {'run':>9} {'delta':>9} {'rel':>8}  95% CI")
        paired = run["paired"] if isinstance(run["paired"], dict) else {}
        for name, m in run["metrics"].items():
            rel = "" if m["relative"] is None else f"{m['relative']:+.1%}"
            ci = ""
            if name in paired:
                p = paired[name]
                star = " *" if p["significant"] else ""
                ci = f"[{p['ci95_low']:+.4f}, {p['ci95_high']:+.4f}]{star}"
            lines.append(
                f"  {name:<9} {m['baseline']:>9.4f} {m['run']:>9.4f} {m['delta']:>+9.4f} "
                f"{rel:>8}  {ci}"
            )
        if not paired:
            lines.append(f"  (no paired test: {run['paired']})")
    lines.append("* the 95% bootstrap interval over users excludes 0")
    return "\n".join(lines)


def rank_ledger(path: str | Path, metric: str = "NDCG@10", top: int = 20) -> pl.DataFrame:
    """The ledger's runs, best ``metric`` first (runs without it last), at most ``top``."""
    frame = read_ledger(path)
    if metric not in METRIC_COLUMNS:
        raise SidrecError(f"--metric must be one of the ledger's metrics, got {metric!r}")
    return frame.sort(metric, descending=True, nulls_last=True).head(top)
