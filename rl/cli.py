"""``sidrec rl``: a thin layer over :mod:`sidrec.rl.train`, imported when the command runs.
Paths default to ``paths.*`` in the config."""

from __future__ import annotations

import argparse
from pathlib import Path

from sidrec.config import load_config, stage_path


def _rl(a: argparse.Namespace) -> dict:
    from sidrec.rl.train import train_rl

    cfg = load_config(a.config, a.overrides)
    model = a.model or stage_path(cfg, "sft")
    data = a.data or stage_path(cfg, "data")
    out = a.out or stage_path(cfg, "rl")
    emb = a.embeddings or (
        stage_path(cfg, "embeddings") if cfg["rl"]["rewards"]["semantic"] else None
    )
    return train_rl(model, data, out, cfg, emb, a.resume, a.overwrite)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``sidrec rl``."""
    p = sub.add_parser("rl", help="GRPO with constrained beam-search rollouts")
    p.add_argument("--config", type=Path, required=True, help="a profile, e.g. configs/demo.yaml")
    p.add_argument("--model", type=Path, help="the model to start from (default: paths.sft)")
    p.add_argument("--data", type=Path, help="dataset directory (default: paths.data)")
    p.add_argument("--out", type=Path, help="default: paths.rl")
    p.add_argument(
        "--embeddings",
        type=Path,
        help="item embeddings for the semantic reward (default: paths.embeddings when used)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier run and restart")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_rl)
