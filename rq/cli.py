"""``sidrec embed`` and ``sidrec sid ...``: a thin layer over :mod:`sidrec.rq.stage`, imported
when a command runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sidrec.core.config import OVERWRITE_HELP, add_config_args, command_config


def _config(a: argparse.Namespace, section: str, flags: dict[str, object]) -> dict:
    overrides = [f"{section}.{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    return command_config(a, [*overrides, *a.overrides])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True)
    add_config_args(p, "a profile whose section supplies the settings", overwrite=OVERWRITE_HELP)


def _embed(a: argparse.Namespace) -> dict:
    from sidrec.rq.embed import embed_dataset

    cfg = _config(a, "embed", {"model": a.model})
    return embed_dataset(a.data, a.out, cfg, a.from_npy, a.overwrite)


def _build(a: argparse.Namespace) -> dict:
    from sidrec.rq.report import format_report
    from sidrec.rq.stage import build_sids

    cfg = _config(
        a,
        "sid",
        {
            "method": a.method,
            "levels": a.levels,
            "codebook_size": a.codebook_size,
            "dedup": a.dedup,
        },
    )
    if a.seed is not None:
        cfg["seed"] = a.seed
    report = build_sids(a.emb, a.out, cfg, a.overwrite)
    print(format_report(report))
    return {"counts": {"items": report["items"], "distinct_sids": report["distinct_sids"]}}


def _assign(a: argparse.Namespace) -> dict:
    from sidrec.rq.report import format_report
    from sidrec.rq.stage import assign_sids

    report = assign_sids(a.sid, a.emb, a.out, a.overwrite)
    print(format_report(report))
    return {
        "counts": {
            "items": report["items"],
            "new_items": report["assigned_items"],
            "distinct_sids": report["distinct_sids"],
        }
    }


def _report(a: argparse.Namespace) -> None:
    from sidrec.rq.stage import report_sids

    report, table = report_sids(a.sid, a.index, a.png)
    print(json.dumps(report, indent=2) if a.json else table)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``sidrec embed`` and ``sidrec sid``."""
    p = sub.add_parser("embed", help="embed item text with a sentence-transformers model")
    p.add_argument("--data", type=Path, required=True, help="dataset directory")
    p.add_argument("--model", help="model name or path (offline: all-minilm-l6-v2)")
    p.add_argument("--from-npy", type=Path, help="use a precomputed [N, D] .npy instead")
    _common(p)
    p.set_defaults(func=_embed)

    sid = sub.add_parser("sid", help="build and score semantic IDs")
    cmds = sid.add_subparsers(dest="sid_command", required=True, metavar="COMMAND")
    p = cmds.add_parser("build", help="quantize embeddings into unique SIDs")
    p.add_argument("--emb", type=Path, required=True, help="embedding directory")
    p.add_argument(
        "--method", choices=["rqkmeans", "rqkmeans-constrained", "rqkmeans-plus", "rqvae"]
    )
    p.add_argument("--levels", type=int)
    p.add_argument("--codebook-size", type=int)
    p.add_argument("--dedup", choices=["reassign", "append"])
    p.add_argument("--seed", type=int)
    _common(p)
    p.set_defaults(func=_build)

    p = cmds.add_parser("assign", help="give SIDs to new items with the frozen quantizer")
    p.add_argument("--sid", type=Path, required=True, help="the existing SID directory")
    p.add_argument(
        "--emb",
        type=Path,
        required=True,
        help="embeddings of the grown catalog (old items first, then new ones)",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true", help="replace a complete output")
    p.set_defaults(func=_assign)

    p = cmds.add_parser("report", help="codebook usage, entropy and collisions of SIDs")
    p.add_argument("--sid", type=Path, help="a SID directory")
    p.add_argument("--index", type=Path, help="or an external index.json (e.g. MiniOneRec's)")
    p.add_argument("--png", type=Path, help="also draw code usage per level")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_report)
