"""``sidrec rl``: a thin layer over :mod:`sidrec.rl.train`, imported when the command runs.
Paths default to ``paths.*`` in the config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sidrec.core.config import add_config_args, command_config, stage_path


def run_rl(
    cfg: dict[str, Any],
    model: Path | None = None,
    data: Path | None = None,
    out: Path | None = None,
    embeddings: Path | None = None,
    examples: Path | None = None,
    sasrec: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict:
    """``sidrec rl`` for the resolved config ``cfg``; a path not given comes from
    ``paths.*`` (embeddings, examples and SASRec only where a reward or task uses them)."""
    from sidrec.core.tree_model import is_tree_model
    from sidrec.rl.train import TITLE_TASKS, train_rl

    r = cfg["rl"]
    model = model or stage_path(cfg, "sft")
    grpo = r["algo"] == "grpo"
    if embeddings is None and grpo and r["rewards"]["semantic"]:
        embeddings = stage_path(cfg, "embeddings")
    if sasrec is None and grpo and r["rewards"]["sasrec"]:
        sasrec = stage_path(cfg, "sasrec")
    if is_tree_model(model):
        from sidrec.rl.tree import train_tree_rl

        data, out = data or stage_path(cfg, "data"), out or stage_path(cfg, "rl")
        return train_tree_rl(model, data, out, cfg, sasrec, resume, overwrite)
    if examples is None and any(r["tasks"].get(t, 0) > 0 for t in TITLE_TASKS):
        examples = stage_path(cfg, "examples")
    return train_rl(
        model,
        data or stage_path(cfg, "data"),
        out or stage_path(cfg, "rl"),
        cfg,
        embeddings,
        examples,
        sasrec,
        resume,
        overwrite,
    )


def _rl(a: argparse.Namespace) -> dict:
    overrides = list(a.overrides) + ([f"rl.algo={a.algo}"] if a.algo else [])
    cfg = command_config(a, overrides)
    return run_rl(
        cfg, a.model, a.data, a.out, a.embeddings, a.examples, a.sasrec, a.resume, a.overwrite
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``sidrec rl``."""
    p = sub.add_parser("rl", help="GRPO (or DPO) with constrained beam-search rollouts")
    add_config_args(
        p,
        "a profile, e.g. configs/demo.yaml",
        required=True,
        overwrite="discard an earlier run and restart",
    )
    p.add_argument("--algo", choices=("grpo", "dpo"), help="overrides rl.algo")
    p.add_argument("--model", type=Path, help="the model to start from (default: paths.sft)")
    p.add_argument("--data", type=Path, help="dataset directory (default: paths.data)")
    p.add_argument("--out", type=Path, help="default: paths.rl")
    p.add_argument(
        "--embeddings",
        type=Path,
        help="item embeddings for the semantic reward (default: paths.embeddings when used)",
    )
    p.add_argument(
        "--examples",
        type=Path,
        help="SFT examples for the title tasks (default: paths.examples when used)",
    )
    p.add_argument(
        "--sasrec",
        type=Path,
        help="a `sidrec baseline sasrec` output for the sasrec reward (default: paths.sasrec)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.set_defaults(func=_rl)
