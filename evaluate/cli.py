"""``sidrec evaluate``, ``sidrec baseline sasrec|two-tower``, ``sidrec rank``, ``sidrec sweep``
and ``sidrec export-submission``: a thin layer over the modules of :mod:`sidrec.evaluate`,
imported when a command runs (so ``sidrec --help`` starts fast). Paths default to ``paths.*``
in the config."""

from __future__ import annotations

import argparse
from pathlib import Path

from sidrec.config import command_config, stage_path


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


def _sasrec(a: argparse.Namespace) -> dict:
    from sidrec.evaluate.sasrec import train_sasrec

    cfg = command_config(a)
    data = a.data or stage_path(cfg, "data")
    out = a.out or stage_path(cfg, "sasrec")
    return train_sasrec(data, out, cfg, a.overwrite)["metrics"]


def _two_tower(a: argparse.Namespace) -> dict:
    from sidrec.evaluate.two_tower import train_two_tower

    cfg = command_config(a)
    data = a.data or stage_path(cfg, "data")
    emb = a.emb or stage_path(cfg, "embeddings")
    out = a.out or stage_path(cfg, "two_tower")
    return train_two_tower(data, emb, out, cfg, a.overwrite)["metrics"]


def _rank(a: argparse.Namespace) -> dict:
    from sidrec.evaluate.ranker import train_ranker
    from sidrec.io import is_complete

    cfg = command_config(a)
    data = a.data or stage_path(cfg, "data")
    emb = a.emb
    if emb is None and is_complete(stage_path(cfg, "embeddings")):
        emb = stage_path(cfg, "embeddings")
    out = a.out or stage_path(cfg, "rank")
    found = train_ranker(data, a.train_candidates, a.candidates, out, cfg, emb, a.overwrite)
    return {"auc": found["auc"], **found["metrics"]}


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
    """Register ``sidrec evaluate`` and ``sidrec baseline sasrec``."""
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
    p.add_argument("--overwrite", action="store_true", help="replace a complete output")
    p.add_argument("--config", type=Path, help="a profile (evaluate.*, seed, paths)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("baseline", help="traditional reference models")
    base = p.add_subparsers(dest="baseline", required=True, metavar="MODEL")
    p = base.add_parser("sasrec", help="SASRec with full-softmax cross-entropy")
    p.add_argument("--data", type=Path, help="dataset directory (default: paths.data)")
    p.add_argument("--out", type=Path, help="default: paths.sasrec")
    p.add_argument("--overwrite", action="store_true", help="replace a complete output")
    p.add_argument("--config", type=Path, help="a profile (sasrec.*, evaluate.split, seed)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_sasrec)
    p = base.add_parser(
        "two-tower", help="two-tower retrieval (id + text item tower), item vectors in faiss"
    )
    p.add_argument("--data", type=Path, help="dataset directory (default: paths.data)")
    p.add_argument("--emb", type=Path, help="item text embeddings (default: paths.embeddings)")
    p.add_argument("--out", type=Path, help="default: paths.two_tower")
    p.add_argument("--overwrite", action="store_true", help="replace a complete output")
    p.add_argument("--config", type=Path, help="a profile (two_tower.*, evaluate.split, seed)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_two_tower)

    p = sub.add_parser(
        "rank", help="re-rank a retriever's candidates with a DeepFM or Wide&Deep ranker"
    )
    p.add_argument(
        "--candidates", type=Path, required=True, help="the evaluation to re-rank (e.g. test)"
    )
    p.add_argument(
        "--train-candidates",
        type=Path,
        required=True,
        help="the same retriever's evaluation of another split to train on (e.g. valid)",
    )
    p.add_argument("--data", type=Path, help="dataset directory (default: paths.data)")
    p.add_argument(
        "--emb",
        type=Path,
        help="item text embeddings (default: paths.embeddings when it exists; else no text)",
    )
    p.add_argument("--out", type=Path, help="default: paths.rank")
    p.add_argument("--overwrite", action="store_true", help="replace a complete output")
    p.add_argument("--config", type=Path, help="a profile (rank.*, seed, paths)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_rank)

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
