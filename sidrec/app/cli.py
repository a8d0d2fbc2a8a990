"""The ``sidrec`` command: one subcommand per stage, each a thin layer over plain functions.

Building the parser imports no stage code: each command imports what it runs when it runs, so
``sidrec --help`` and the light commands start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import sidrec
from sidrec.core.config import add_config_args
from sidrec.core.errors import SidrecError


def build_parser() -> argparse.ArgumentParser:
    from sidrec.analysis import cli as analysis_cli
    from sidrec.baselines import cli as baselines_cli
    from sidrec.data import cli as data_cli
    from sidrec.evaluate import cli as evaluate_cli
    from sidrec.rl import cli as rl_cli
    from sidrec.rq import cli as rq_cli
    from sidrec.serve import cli as serve_cli
    from sidrec.sft import cli as sft_cli

    parser = argparse.ArgumentParser(prog="sidrec", description=sidrec.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sidrec {sidrec.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_cli.add_commands(sub)
    rq_cli.add_commands(sub)
    sft_cli.add_commands(sub)
    rl_cli.add_commands(sub)
    evaluate_cli.add_commands(sub)
    baselines_cli.add_commands(sub)
    analysis_cli.add_commands(sub)
    serve_cli.add_commands(sub)
    _add_update(sub)
    _add_pipeline(sub)
    _add_preflight(sub)
    _add_recommend(sub)
    return parser


def _update(a: argparse.Namespace) -> dict:
    from sidrec.app.update import rollback, run_update
    from sidrec.core.config import model_config

    if a.rollback:
        return {"counts": rollback(a.state)}
    if a.model is None or a.day is None:
        raise SidrecError("sidrec update needs --model and --day (or --rollback)")
    cfg = model_config(a.model, a.config, a.overrides, a.overlay)
    return {"counts": run_update(a.model, a.day, a.state, cfg)}


def _add_update(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "update",
        help="a day's new items and interactions: fine-tune, promote only if not worse",
    )
    p.add_argument("--model", type=Path, help="the model to start from")
    p.add_argument("--day", type=Path, help="the day's directory")
    p.add_argument("--state", type=Path, required=True, help="the update state directory")
    p.add_argument(
        "--rollback",
        action="store_true",
        help="serve the model promoted before the serving one again (no --model, --day)",
    )
    add_config_args(p, "a profile (default: the model's own config)")
    p.set_defaults(func=_update)


def _ask_stage(stage: str, state: str, out: Path) -> str:
    """Ask in the terminal what to do with one pipeline stage (Enter = the default)."""
    from sidrec.app.pipeline import ACTIONS, default_action
    from sidrec.core.io import is_complete

    default = default_action(state)
    what = {"current": "complete, same settings", "resumable": "unfinished: run resumes it"}
    found = what.get(state, "complete, other settings" if is_complete(out) else "not built")
    while True:
        answer = (
            input(f"[{stage}] {out}: {found}. run / skip / reuse / stop? [{default}] ")
            .strip()
            .lower()
        )
        picked = [a for a in ACTIONS if a.startswith(answer)] if answer else [default]
        if len(picked) == 1:
            return picked[0]
        print(f"  answer one of {', '.join(ACTIONS)} (or its first letter)")


def _pipeline(a: argparse.Namespace) -> None:
    from sidrec.app.pipeline import format_summary, run_pipeline
    from sidrec.core.config import command_config

    ask = a.ask and not a.yes and sys.stdin.isatty()
    runs: list = []
    run_pipeline(
        command_config(a),
        a.force,
        until=a.to,
        start=a.start,
        choose=_ask_stage if ask else None,
        runs=runs,
    )
    print("\n" + format_summary(runs))


def _add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="run every stage from one config (the one-shot run)")
    add_config_args(p, "a profile, e.g. configs/demo.yaml", required=True)
    p.add_argument("--force", action="store_true", help="rebuild every stage")
    p.add_argument(
        "--to", "--until", dest="to", metavar="STAGE", help="stop after this stage (e.g. sid)"
    )
    p.add_argument(
        "--from",
        dest="start",
        metavar="STAGE",
        help="start at this stage; the earlier ones must be complete and are used as they are",
    )
    p.add_argument(
        "--ask",
        action="store_true",
        help="at each stage choose run, skip, reuse (its output as it is) or stop",
    )
    p.add_argument("--yes", action="store_true", help="take every default (as without a terminal)")
    p.set_defaults(func=_pipeline)


def _recommend(a: argparse.Namespace) -> None:
    from sidrec.serve.recommend import run_command

    run_command(a)


def _preflight(a: argparse.Namespace) -> None:
    from sidrec.app.preflight import format_checks, preflight
    from sidrec.core.config import command_config

    checks = preflight(command_config(a))
    print(format_checks(checks))
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        raise SidrecError(f"preflight failed: {', '.join(failed)} (see above)")


def _add_preflight(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preflight",
        help="check what a profile needs (Python, disk, GPU, hub, downloads) before running it",
    )
    add_config_args(p, "a profile, e.g. configs/demo.yaml", required=True)
    p.set_defaults(func=_preflight)


def _add_recommend(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recommend",
        help="top-K items for histories, from a model directory alone",
        description="Top-K items for --history, or for each JSON line on stdin "
        '({"user_id": ..., "history": [...]}) one JSON line on stdout. In JSON, numbers are '
        "item ids and strings source ids (e.g. ASINs); in --history, integers are item ids.",
    )
    p.add_argument("--model", type=Path, required=True, help="an sft (or rl) output")
    p.add_argument("--history", help="comma-separated item ids or source ids, oldest first")
    p.add_argument("--k", type=int, default=10, help="items per history (default 10)")
    p.add_argument("--batch-size", type=int, default=16, help="histories decoded together")
    p.add_argument(
        "--head",
        default="restricted",
        help="restricted (default): score only the SID tokens; full: the whole vocabulary",
    )
    p.set_defaults(func=_recommend)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user errors print one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except SidrecError as e:
        print(f"sidrec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "sidrec: interrupted; re-run the same command to start the stage cleanly",
            file=sys.stderr,
        )
        return 130
    if isinstance(result, dict):
        print(json.dumps(result.get("counts", result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
