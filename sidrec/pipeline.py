"""``sidrec pipeline``: every stage that exists, in order, from one config.

Outputs go to ``<output_root>/<run_name>/<stage>``. A stage whose output is complete and whose
config sections are unchanged since the last run is skipped, so an interrupted pipeline resumes
where it stopped; a changed stage is rebuilt, and so is everything after it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sidrec.config import load_config
from sidrec.data.dataset import read_dataset
from sidrec.data.stage import build_from_config
from sidrec.data.stats import dataset_stats, format_stats
from sidrec.io import is_complete, write_yaml
from sidrec.manifest import CONFIG_FILE
from sidrec.rq.embed import embed_dataset
from sidrec.rq.stage import build_sids, report_sids


@dataclass(frozen=True)
class Stage:
    name: str
    config_keys: tuple[str, ...]
    run: Callable[[dict[str, Any], Path, bool], Any]
    show: Callable[[Path], str] | None = None


def _show_data(path: Path) -> str:
    ds, manifest = read_dataset(path)
    return format_stats(dataset_stats(ds), f"dataset {path} ({manifest['source']})")


def _embed(cfg: dict[str, Any], out: Path, overwrite: bool) -> None:
    embed_dataset(out.parent / "data", out, cfg["embed"], overwrite=overwrite)


def _sid(cfg: dict[str, Any], out: Path, overwrite: bool) -> None:
    build_sids(out.parent / "embeddings", out, cfg["sid"], cfg["seed"], overwrite)


STAGES = (
    Stage("data", ("seed", "data"), build_from_config, _show_data),
    Stage("embeddings", ("embed",), _embed),
    Stage("sid", ("seed", "sid"), _sid, lambda p: report_sids(sid=p)[1]),
)


def run_pipeline(
    cfg: dict[str, Any], force: bool = False, log: Callable[[str], None] = print
) -> dict[str, Path]:
    """Run every stage for the resolved config ``cfg``; return each stage's output directory."""
    root = Path(cfg["output_root"]) / cfg["run_name"]
    root.mkdir(parents=True, exist_ok=True)
    previous_file = root / CONFIG_FILE
    previous = yaml.safe_load(previous_file.read_text()) if previous_file.exists() else None
    outputs: dict[str, Path] = {}
    rebuild = force
    for stage in STAGES:
        out = root / stage.name
        same = previous is not None and all(previous.get(k) == cfg[k] for k in stage.config_keys)
        if not rebuild and same and is_complete(out):
            log(f"[{stage.name}] complete and unchanged: {out}")
        else:
            log(f"[{stage.name}] building {out}")
            stage.run(cfg, out, True)
            rebuild = True
        if stage.show is not None:
            log(stage.show(out))
        outputs[stage.name] = out
    write_yaml(previous_file, cfg)
    return outputs


def _run(a: argparse.Namespace) -> None:
    run_pipeline(load_config(a.config, a.overrides), a.force)


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="run every stage from one config (the one-shot run)")
    p.add_argument("--config", type=Path, required=True, help="a profile, e.g. configs/demo.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--force", action="store_true", help="rebuild every stage")
    p.set_defaults(func=_run)
