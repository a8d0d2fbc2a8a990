"""``sidrec evaluate``, ``sidrec sweep`` and ``sidrec export-submission``: a thin layer over
the modules of :mod:`sidrec.evaluate`, imported when a command runs (so ``sidrec --help``
starts fast). Paths default to ``paths.*`` in the config."""

from __future__ import annotations

import argparse
from pathlib import Path

from sidrec.core.config import OVERWRITE_HELP, add_config_args, command_config, stage_path


def _batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def _evaluate(a: argparse.Namespace) -> dict:
    from sidrec.evaluate.generative import evaluate_model

    overrides = list(a.overrides)
    for key, value in (("num_beams", a.num_beams), ("batch_size", a.batch_size)):
        if value is not None:
            overrides.append(f"evaluate.{key}={value}")
    if a.split is not None:
        overrides.append(f"evaluate.split={a.split}")
    cfg = command_config(a, overrides)
    model = a.model or stage_path(cfg, "sft")
    data = a.data or stage_path(cfg, "data")
    sid = a.sid  # None: the SIDs bundled with the model
    out = a.out or stage_path(cfg, "evaluate")
    results = evaluate_model(model, data, sid, out, cfg, a.overwrite)
    return results.get("metrics", {})


def _sweep(a: argparse.Namespace) -> None:
    from sidrec.evaluate.sweep import format_sweep, sweep, write_csv

    rows = sweep(a.eval, a.topk_list, a.threshold_list)
    out = a.out or a.eval / "sweep.csv"
    write_csv(rows, out)
    print(format_sweep(rows))
    print(f"written to {out}")


def _export(a: argparse.Namespace) -> dict:
    from sidrec.evaluate.sweep import export_submission

    return {"counts": export_submission(a.eval, a.threshold, a.topk, a.max_entries, a.out)}


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``sidrec evaluate``, ``sidrec sweep`` and ``sidrec export-submission``."""
    p = sub.add_parser("evaluate", help="HR@K / NDCG@K of a SID model by constrained beam search")
    p.add_argument("--model", type=Path, help="an sft (or rl) output (default: paths.sft)")
    p.add_argument("--data", type=Path, help="dataset directory (default: paths.data)")
    p.add_argument(
        "--sid",
        type=Path,
        help="SID directory; must hold the SIDs the model was trained on (default: the model's "
        "own, bundled in <model>/sids)",
    )
    p.add_argument("--out", type=Path, help="default: paths.evaluate")
    p.add_argument("--num-beams", type=int, help="K (default: evaluate.num_beams)")
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        help="users per batch, or auto: the largest that fits (default: evaluate.batch_size)",
    )
    p.add_argument("--split", choices=("valid", "test"), help="default: evaluate.split")
    add_config_args(p, "a profile (evaluate.*, seed, paths)", overwrite=OVERWRITE_HELP)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "sweep",
        help="precision, recall and F1 of the items shown at each top-K and score threshold",
    )
    p.add_argument("--eval", type=Path, required=True, help="an evaluation directory")
    p.add_argument("--topk-list", type=int, nargs="+", default=[5, 10, 20, 50], metavar="K")
    p.add_argument(
        "--threshold-list",
        type=float,
        nargs="+",
        default=[0.015, 0.02, 0.025],
        metavar="T",
        help="normalised scores: a softmax over each user's ranked list",
    )
    p.add_argument("--out", type=Path, help="CSV (default: <eval>/sweep.csv)")
    p.set_defaults(func=_sweep)

    p = sub.add_parser(
        "export-submission", help="user_id<TAB>item_id lines of the items shown at (K, threshold)"
    )
    p.add_argument("--eval", type=Path, required=True, help="an evaluation directory")
    p.add_argument("--threshold", type=float, required=True, help="normalised score, in [0, 1]")
    p.add_argument("--topk", type=int, required=True)
    p.add_argument("--max-entries-per-user", dest="max_entries", type=int, default=50)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_export)
