"""The ``sidrec`` command: one subcommand per stage, each a thin layer over plain functions."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import sidrec
from sidrec.errors import SidrecError


def build_parser() -> argparse.ArgumentParser:
    from sidrec import pipeline, recommend
    from sidrec.data import cli as data_cli
    from sidrec.evaluate import cli as evaluate_cli
    from sidrec.rq import cli as rq_cli
    from sidrec.sft import cli as sft_cli

    parser = argparse.ArgumentParser(prog="sidrec", description=sidrec.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sidrec {sidrec.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_cli.add_commands(sub)
    rq_cli.add_commands(sub)
    sft_cli.add_commands(sub)
    evaluate_cli.add_commands(sub)
    pipeline.add_command(sub)
    recommend.add_command(sub)
    return parser


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
