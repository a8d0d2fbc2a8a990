"""The improvement loop (docs/benchmarks.md): evaluate -> analyze -> suggest --auto -> retrain
-> compare, measured.

Runs ``sidrec pipeline`` for a profile (finished stages with the same config are reused),
writes its bad-case report (``<run>/analysis``), turns every strategy past its threshold into
an overlay (``<run>/suggested.yaml``), re-runs the pipeline with that overlay under the run name
``<run>-suggested``, reports that evaluation too, and compares the two with a paired bootstrap
over the test users. Prints one JSON object: the strategies with their evidence, the changes,
both runs' metrics and recommendation statistics, the paired deltas and the minutes of each
step. ``key=value`` overrides apply to both runs (the overlay goes over them).

    python benchmarks/improve_loop.py --config configs/demo.yaml [--out FILE] [key=value ...]
    python benchmarks/improve_loop.py --config configs/beauty.yaml embed.model=all-minilm-l6-v2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import yaml

from sidrec.analysis.analyze import analyze
from sidrec.analysis.compare import compare
from sidrec.analysis.suggest import suggest
from sidrec.config import load_config, plain, stage_path
from sidrec.io import RESULTS_FILE, read_json
from sidrec.manifest import git_commit, machine, print_report
from sidrec.pipeline import run_pipeline

METRICS = ("HR@5", "HR@10", "NDCG@5", "NDCG@10")


def _run(
    cfg: dict[str, Any], top_k: int, log: Any
) -> tuple[Path, dict[str, Any], dict[str, float]]:
    """Run the pipeline for ``cfg`` and report its evaluation; return the evaluation
    directory, the bad-case report and the minutes of both steps."""
    t0 = time.perf_counter()
    outputs = run_pipeline(cfg, log=log)
    t1 = time.perf_counter()
    eval_dir = outputs["evaluate"]
    report = analyze(
        eval_dir,
        stage_path(cfg, "evaluate").parent / "analysis",
        embeddings=outputs.get("embeddings"),
        top_k=top_k,
        overwrite=True,
    )
    minutes = {"pipeline": (t1 - t0) / 60, "analyze": (time.perf_counter() - t1) / 60}
    return eval_dir, report, {k: round(v, 2) for k, v in minutes.items()}


def _summary(eval_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    results = read_json(eval_dir / RESULTS_FILE)
    return {
        "evaluation": str(eval_dir),
        "users": results["users"],
        "metrics": {m: round(results["metrics"][m], 5) for m in METRICS},
        "failure_rate": round(report["failure_rate"], 4),
        "recommended": {
            k: v if v is None else round(v, 4) for k, v in report["recommended"].items()
        },
    }


def run(
    config: str | Path, overrides: list[str], top_k: int = 10, log: Any = print
) -> dict[str, Any]:
    """The whole loop for profile ``config`` with ``overrides``; returns the JSON object."""
    t0 = time.perf_counter()
    cfg = load_config(config, overrides)
    base_eval, base_report, base_minutes = _run(cfg, top_k, log)
    run_dir = stage_path(cfg, "evaluate").parent
    overlay = run_dir / "suggested.yaml"
    t1 = time.perf_counter()
    suggested = suggest(run_dir / "analysis" / "badcase_report.json", overlay, auto=True)
    suggest_minutes = round((time.perf_counter() - t1) / 60, 2)
    result: dict[str, Any] = {
        "benchmark": "improve_loop",
        "config": str(config),
        "overrides": overrides,
        "top_k": top_k,
        "strategies": {
            s["name"]: {"triggered": s["triggered"], "evidence": s["evidence"]}
            for s in suggested["strategies"]
        },
        "chosen": suggested["chosen"],
        "overlay": str(overlay),
        "changes": suggested["overlay"],
        "baseline": {**_summary(base_eval, base_report), "minutes": base_minutes},
    }
    if suggested["chosen"]:
        # the overlay goes over the baseline as run (profile and overrides), so it is written
        # out whole: key=value would otherwise win over the overlay
        base = run_dir / "loop_config.yaml"
        base.write_text(yaml.safe_dump(plain(cfg), sort_keys=False))
        name = f"{cfg['run_name']}-suggested"
        new_cfg = load_config(base, [f"run_name={name}"], overlays=[overlay])
        new_eval, new_report, new_minutes = _run(new_cfg, top_k, log)
        compared = compare(
            [base_eval, new_eval], stage_path(new_cfg, "evaluate").parent / "compare"
        )
        paired = compared["runs"][0]["paired"]
        if isinstance(paired, dict):
            paired = {m: paired[m] for m in METRICS if m in paired}
        result["suggested"] = {**_summary(new_eval, new_report), "minutes": new_minutes}
        result["paired_difference"] = paired
        result["comparison"] = str(stage_path(new_cfg, "evaluate").parent / "compare")
    result["minutes"] = {
        "suggest": suggest_minutes,
        "total": round((time.perf_counter() - t0) / 60, 2),
    }
    result["machine"] = machine()
    result["sidrec_commit"] = git_commit()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="a profile, e.g. configs/demo.yaml")
    p.add_argument("--top-k", type=int, default=10, help="a failure = target not in the top K")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    a = p.parse_args()
    print_report(run(a.config, a.overrides, a.top_k), a.out)


if __name__ == "__main__":
    main()
