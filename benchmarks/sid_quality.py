"""SID quality of every method on the 3,686 Industrial items, and of MiniOneRec's shipped SIDs.

Embeds the items with a sentence-transformers model (offline MiniLM by default), builds SIDs
with each method, and prints one JSON object: per method the collision rate before and after
de-duplication, per-level utilization and entropy, reconstruction error and seconds.

    python benchmarks/sid_quality.py [--out results.json] [--model all-minilm-l6-v2] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from sidrec.core.config import load_config
from sidrec.core.manifest import git_commit, machine, print_report
from sidrec.data.stage import import_minionerec_dir
from sidrec.rq.embed import embed_dataset
from sidrec.rq.stage import build_sids, report_sids

DATASET = "Industrial_and_Scientific"
METHODS = ("rqkmeans", "rqkmeans-constrained", "rqkmeans-plus", "rqvae")
DEFAULT_SRC = Path(__file__).resolve().parents[2] / "shared" / "data" / "minionerec_amazon18"


def _levels(report: dict) -> list[dict]:
    keys = ("level", "used", "utilization", "entropy_bits", "entropy_pct", "largest_code_share")
    return [{k: lv[k] for k in keys} for lv in report["levels"]]


def run(src: Path, overrides: list[str], methods: tuple[str, ...] = METHODS) -> dict:
    """Run the benchmark; returns the JSON-ready result."""
    cfg = load_config(None, overrides)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        import_minionerec_dir(root / "data", src, DATASET)
        start = time.time()
        embed_dataset(root / "data", root / "emb", cfg)
        embed_seconds = round(time.time() - start, 1)
        for method in methods:
            report = build_sids(
                root / "emb", root / method, {**cfg, "sid": {**cfg["sid"], "method": method}}
            )
            results[method] = {
                "collision_rate_before_dedup": report["collision_rate_before_dedup"],
                "collision_rate_after_dedup": report["collision_rate"],
                "items_with_extra_token": report["items_with_extra_token"],
                "reconstruction_error": report["reconstruction_error"],
                "seconds": report["seconds"],
                "levels": _levels(report),
            }
    shipped, _ = report_sids(index=src / "index" / f"{DATASET}.index.json")
    results["minionerec_shipped"] = {
        "collision_rate": shipped["collision_rate"],
        "shared_sids": shipped["shared_sids"],
        "levels": _levels(shipped),
    }
    return {
        "benchmark": "sid_quality",
        "dataset": f"{DATASET} (MiniOneRec, {shipped['items']} items)",
        "settings": {
            "embed_model": cfg["embed"]["model"],
            "embed_max_seq_length": cfg["embed"]["max_seq_length"],
            "embed_seconds": embed_seconds,
            **{
                k: cfg["sid"][k]
                for k in ("levels", "codebook_size", "dedup", "epochs", "constrained_slack")
            },
            "seed": cfg["seed"],
        },
        "results": results,
        "machine": machine(),
        "sidrec_commit": git_commit(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, default=DEFAULT_SRC, help="MiniOneRec Industrial folder")
    p.add_argument("--model", default="all-minilm-l6-v2", help="sentence-transformers model")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    a = p.parse_args(argv)
    result = run(a.src, [f"embed.model={a.model}", *a.overrides])
    print_report(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
