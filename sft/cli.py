"""``sidrec convert`` and ``sidrec sft``: a thin layer over :mod:`sidrec.sft.convert` and
:mod:`sidrec.sft.train`, imported when a command runs. Paths default to ``paths.*`` in the
config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sidrec.core.config import (
    OVERWRITE_HELP,
    add_config_args,
    command_config,
    model_family,
    stage_path,
)
from sidrec.core.io import is_complete


def _paths(a: argparse.Namespace, cfg: dict[str, Any], names: tuple[str, ...]) -> list[Path]:
    return [getattr(a, n) or stage_path(cfg, n) for n in names]


def _convert(a: argparse.Namespace) -> dict:
    from sidrec.sft.convert import convert

    cfg = command_config(a)
    data, sid, out = _paths(a, cfg, ("data", "sid", "examples"))
    return convert(data, sid, out, cfg, a.overwrite)


def _sft(a: argparse.Namespace) -> dict:
    from sidrec.sft.convert import convert
    from sidrec.sft.train import train_sft

    cfg = command_config(a)
    if model_family(cfg) == "tree":
        from sidrec.sft.tree import train_tree

        data, sid, out = _paths(a, cfg, ("data", "sid", "sft"))
        return train_tree(data, sid, out, cfg, resume=a.resume, overwrite=a.overwrite)
    examples, out = _paths(a, cfg, ("examples", "sft"))
    if not is_complete(examples):
        data, sid = stage_path(cfg, "data"), stage_path(cfg, "sid")
        print(f"[sft] no examples at {examples}: converting {data} + {sid}")
        convert(data, sid, examples, cfg)
    return train_sft(examples, out, cfg, resume=a.resume, overwrite=a.overwrite)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``sidrec convert`` and ``sidrec sft``."""
    p = sub.add_parser("convert", help="SFT examples from a dataset and its SIDs")
    p.add_argument("--data", type=Path, help="dataset directory (default: paths.data)")
    p.add_argument("--sid", type=Path, help="SID directory (default: paths.sid)")
    p.add_argument("--out", dest="examples", type=Path, help="default: paths.examples")
    add_config_args(p, "a profile (convert.*, sft.format, seed)", overwrite=OVERWRITE_HELP)
    p.set_defaults(func=_convert)

    p = sub.add_parser(
        "sft", help="train the model that emits the next item's SID (model.family: lm | tree)"
    )
    add_config_args(
        p,
        "a profile, e.g. configs/demo.yaml",
        required=True,
        overwrite="discard an earlier run and restart",
    )
    p.add_argument(
        "--examples",
        type=Path,
        help="examples directory (default: paths.examples;"
        " converted from paths.data and paths.sid when missing)",
    )
    p.add_argument("--data", type=Path, help="model.family tree: default paths.data")
    p.add_argument("--sid", type=Path, help="model.family tree: default paths.sid")
    p.add_argument("--out", dest="sft", type=Path, help="default: paths.sft")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.set_defaults(func=_sft)
