"""The improvement loop (docs/benchmarks.md): evaluate -> analyze -> suggest --auto -> retrain
-> compare, measured.

Runs ``sidrec pipeline`` for a profile (finished stages with the same config are reused; its
last stages write the bad-case report of the last evaluation and the overlay of every strategy
past its threshold), re-runs the pipeline with that overlay under the run name
``<run>-suggested``, and compares the two last evaluations with a paired bootstrap over the
test users. Prints one JSON object: the strategies with their evidence, the changes, both
runs' metrics and recommendation statistics, the paired deltas and the minutes of each run.
``key=value`` overrides apply to both runs (the overlay goes over them).

    python benchmarks/improve_loop.py --config configs/demo.yaml [--out FILE] [key=value ...]
    python benchmarks/improve_loop.py --config configs/beauty.yaml embed.model=all-minilm-l6-v2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import yaml

from sidrec.analysis.analyze import REPORT_FILE
from sidrec.analysis.compare import compare
from sidrec.analysis.suggest import OVERLAY_FILE, STRATEGIES_FILE
from sidrec.app.pipeline import run_pipeline
from sidrec.core.config import load_config, plain
from sidrec.core.io import RESULTS_FILE, read_json
from sidrec.core.manifest import git_commit, machine, print_report

METRICS = ("HR@5", "HR@10", "NDCG@5", "NDCG@10")


def _run(cfg: dict[str, Any], log: Any) -> tuple[dict[str, Path], dict[str, Any]]:
    """Run the pipeline for ``cfg``; return its outputs and a summary of its last
    evaluation (metrics, failure rate, recommendation statistics, minutes)."""
    t0 = time.perf_counter()
    outputs = run_pipeline(cfg, log=log)
    evaluation = outputs.get("evaluate_rl", outputs["evaluate"])
    results = read_json(evaluation / RESULTS_FILE)
    report = read_json(outputs["analyze"] / REPORT_FILE)
    return outputs, {
        "evaluation": str(evaluation),
        "users": results["users"],
        "metrics": {m: round(results["metrics"][m], 5) for m in METRICS},
        "baselines": {
            name: {m: round(v[m], 5) for m in METRICS}
            for name, v in results.get("baselines", {}).items()
        },
        "failure_rate": round(report["failure_rate"], 4),
        "recommended": {
            k: v if v is None else round(v, 4) for k, v in report["recommended"].items()
        },
        "minutes": round((time.perf_counter() - t0) / 60, 2),
    }


def run(config: str | Path, overrides: list[str], log: Any = print) -> dict[str, Any]:
    """The whole loop for profile ``config`` with ``overrides``; returns the JSON object."""
    t0 = time.perf_counter()
    cfg = load_config(config, overrides)
    outputs, baseline = _run(cfg, log)
    suggested = read_json(outputs["suggest"] / STRATEGIES_FILE)
    overlay = outputs["suggest"] / OVERLAY_FILE
    result: dict[str, Any] = {
        "benchmark": "improve_loop",
        "config": str(config),
        "overrides": overrides,
        "top_k": cfg["analysis"]["top_k"],
        "strategies": {
            s["name"]: {"triggered": s["triggered"], "evidence": s["evidence"]}
            for s in suggested["strategies"]
        },
        "chosen": suggested["chosen"],
        "overlay": str(overlay),
        "changes": suggested["overlay"],
        "baseline": baseline,
    }
    if suggested["chosen"]:
        # the overlay goes over the baseline as run (profile and overrides), so it is written
        # out whole: key=value would otherwise win over the overlay
        base = outputs["suggest"].parent / "loop_config.yaml"
        base.write_text(yaml.safe_dump(plain(cfg), sort_keys=False))
        name = f"{cfg['run_name']}-suggested"
        new_cfg = load_config(base, [f"run_name={name}"], overlays=[overlay])
        new_outputs, result["suggested"] = _run(new_cfg, log)
        where = new_outputs["suggest"].parent / "compare"
        evaluations = [Path(result[r]["evaluation"]) for r in ("baseline", "suggested")]
        paired = compare(evaluations, where)["runs"][0]["paired"]
        if isinstance(paired, dict):
            paired = {m: paired[m] for m in METRICS if m in paired}
        result["paired_difference"] = paired
        result["comparison"] = str(where)
    result["minutes"] = round((time.perf_counter() - t0) / 60, 2)
    result["machine"] = machine()
    result["sidrec_commit"] = git_commit()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="a profile, e.g. configs/demo.yaml")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    a = p.parse_args()
    print_report(run(a.config, a.overrides), a.out)


if __name__ == "__main__":
    main()
