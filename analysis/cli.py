"""``sidrec analyze``, ``sidrec suggest`` and ``sidrec compare``: thin layers over the
modules of :mod:`sidrec.analysis`, imported when a command runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from sidrec.core.config import add_config_args, command_config
from sidrec.core.errors import SidrecError
from sidrec.core.ledger import ledger_path


def _analyze(a: argparse.Namespace) -> None:
    from sidrec.analysis.analyze import analyze, format_summary

    report = analyze(a.eval, a.out, a.data, a.sid, a.embeddings, a.top_k, a.seed, a.overwrite)
    print(format_summary(report))
    print(f"written: {a.out}")


def _suggest(a: argparse.Namespace) -> None:
    import sys

    from sidrec.analysis.suggest import ask, suggest

    if not a.auto and not sys.stdin.isatty():
        raise SidrecError("no terminal to choose strategies in: pass --auto")
    result = suggest(a.report, a.out, a.auto, None if a.auto else ask)
    for s in result["strategies"]:
        mark = "chosen" if s["name"] in result["chosen"] else "-"
        print(f"{s['name']:<15} {mark:<7} triggered={s['triggered']}  {s['evidence']}")
    print(f"overlay: {result['written']} (sidrec pipeline --config BASE --overlay {a.out})")


def _compare(a: argparse.Namespace) -> None:
    import polars as pl

    from sidrec.analysis.compare import compare, format_comparison, rank_ledger

    if a.ledger is not None:
        if a.runs:
            raise SidrecError("give runs to compare or --ledger, not both")
        path = a.ledger or ledger_path(command_config(a, []))
        ranked = rank_ledger(path, a.metric, a.top)
        cols = ["run_name", "method", "model", "dataset", "sid_method", "split", "users"]
        with pl.Config(tbl_cols=-1, tbl_rows=-1, tbl_width_chars=200, fmt_str_lengths=40):
            print(ranked.select([*cols, a.metric, "time", "output"]))
        return
    print(format_comparison(compare(a.runs, a.out)))
    if a.out is not None:
        print(f"written: {a.out}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``sidrec analyze``, ``sidrec suggest`` and ``sidrec compare``."""
    p = sub.add_parser(
        "analyze",
        help="bad-case report of an evaluation: segments, decoding depth, what is recommended",
    )
    p.add_argument("--eval", type=Path, required=True, help="an evaluate (or sasrec) output")
    p.add_argument("--out", type=Path, required=True, help="the report directory")
    p.add_argument("--data", type=Path, help="dataset directory (default: the evaluation's)")
    p.add_argument("--sid", type=Path, help="SID directory (default: the evaluated model's)")
    p.add_argument(
        "--embeddings", type=Path, help="an embed output: adds the similarity and recency segments"
    )
    p.add_argument("--top-k", type=int, default=10, help="a failure = target not in the top K")
    p.add_argument("--seed", type=int, default=0, help="which misses are shown as examples")
    p.add_argument("--overwrite", action="store_true", help="replace a complete output")
    p.set_defaults(func=_analyze)

    p = sub.add_parser(
        "suggest",
        help="optimization strategies from a bad-case report, as a config overlay",
        description="Judge the six strategies (long_tail, cold_start, short_history, "
        "sid_quality, recency_bias, hyperparameter) on a badcase_report.json and write the "
        "chosen ones' config changes as an overlay for --overlay.",
    )
    p.add_argument("--report", type=Path, required=True, help="a badcase_report.json")
    p.add_argument("--out", type=Path, required=True, help="the overlay YAML to write")
    p.add_argument("--auto", action="store_true", help="take every triggered strategy")
    p.set_defaults(func=_suggest)

    p = sub.add_parser(
        "compare",
        help="evaluations side by side, with paired significance; or the ledger ranked",
        description="Compare each run with the first: every metric with absolute and relative "
        "deltas, and a paired bootstrap over users where both ranked the same users. A run is "
        "an evaluation directory or its results.json. With --ledger, rank the experiment "
        "ledger instead.",
    )
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN", help="baseline first")
    p.add_argument("--out", type=Path, help="write comparison.json and comparison.png here")
    p.add_argument(
        "--ledger",
        nargs="?",
        const="",
        type=str,
        metavar="FILE",
        help="rank the runs of the ledger (default: <output_root>/experiments.csv)",
    )
    p.add_argument("--metric", default="NDCG@10", help="what --ledger ranks by")
    p.add_argument("--top", type=int, default=20, help="runs --ledger shows")
    add_config_args(p, "a profile (its output_root, for --ledger)", overrides=False)
    p.set_defaults(func=_compare)
