"""``sidrec baseline sasrec|two-tower`` and ``sidrec rank``: a thin layer over the modules of
:mod:`sidrec.baselines`, imported when a command runs. Paths default to ``paths.*`` in the
config."""

from __future__ import annotations

import argparse
from pathlib import Path

from sidrec.core.config import OVERWRITE_HELP, add_config_args, command_config, stage_path


def _sasrec(a: argparse.Namespace) -> dict:
    from sidrec.baselines.sasrec import train_sasrec

    cfg = command_config(a)
    data = a.data or stage_path(cfg, "data")
    out = a.out or stage_path(cfg, "sasrec")
    return train_sasrec(data, out, cfg, a.overwrite)["metrics"]


def _two_tower(a: argparse.Namespace) -> dict:
    from sidrec.baselines.two_tower import train_two_tower

    cfg = command_config(a)
    data = a.data or stage_path(cfg, "data")
    emb = a.emb or stage_path(cfg, "embeddings")
    out = a.out or stage_path(cfg, "two_tower")
    return train_two_tower(data, emb, out, cfg, a.overwrite)["metrics"]


def _rank(a: argparse.Namespace) -> dict:
    from sidrec.baselines.ranker import train_ranker
    from sidrec.core.io import is_complete

    cfg = command_config(a)
    data = a.data or stage_path(cfg, "data")
    emb = a.emb
    if emb is None and is_complete(stage_path(cfg, "embeddings")):
        emb = stage_path(cfg, "embeddings")
    out = a.out or stage_path(cfg, "rank")
    found = train_ranker(data, a.train_candidates, a.candidates, out, cfg, emb, a.overwrite)
    return {"auc": found["auc"], **found["metrics"]}


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``sidrec baseline sasrec|two-tower`` and ``sidrec rank``."""
    p = sub.add_parser("baseline", help="traditional reference models")
    base = p.add_subparsers(dest="baseline", required=True, metavar="MODEL")
    p = base.add_parser("sasrec", help="SASRec with full-softmax cross-entropy")
    p.add_argument("--data", type=Path, help="dataset directory (default: paths.data)")
    p.add_argument("--out", type=Path, help="default: paths.sasrec")
    add_config_args(p, "a profile (sasrec.*, evaluate.split, seed)", overwrite=OVERWRITE_HELP)
    p.set_defaults(func=_sasrec)
    p = base.add_parser(
        "two-tower", help="two-tower retrieval (id + text item tower), item vectors in faiss"
    )
    p.add_argument("--data", type=Path, help="dataset directory (default: paths.data)")
    p.add_argument("--emb", type=Path, help="item text embeddings (default: paths.embeddings)")
    p.add_argument("--out", type=Path, help="default: paths.two_tower")
    add_config_args(p, "a profile (two_tower.*, evaluate.split, seed)", overwrite=OVERWRITE_HELP)
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
    add_config_args(p, "a profile (rank.*, seed, paths)", overwrite=OVERWRITE_HELP)
    p.set_defaults(func=_rank)
