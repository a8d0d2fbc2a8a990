"""``sidrec pipeline``: every stage that exists, in order, from one config.

Stages: data -> embeddings -> sid -> examples -> sft -> evaluate. Outputs go to
``paths.<stage>``, by default ``<output_root>/<run_name>/<stage>``. A stage whose output is
complete and whose config sections are unchanged since the last run is skipped, so an
interrupted pipeline resumes where it stopped (training from its last checkpoint); a changed
stage is rebuilt, and so is every stage after it. With ``sid.method=imported`` the source's own
SIDs are used and nothing is embedded.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sidrec.config import load_config, stage_path
from sidrec.data.dataset import read_dataset
from sidrec.data.stage import build_from_config, import_sids_from_config
from sidrec.data.stats import dataset_stats, format_stats
from sidrec.errors import SidrecError
from sidrec.evaluate.generative import evaluate_model
from sidrec.evaluate.ranking import RESULTS_FILE
from sidrec.io import is_complete, read_json, write_yaml
from sidrec.manifest import CONFIG_FILE
from sidrec.rq.embed import embed_dataset
from sidrec.rq.stage import build_sids, report_sids
from sidrec.sft.convert import convert
from sidrec.sft.train import train_sft

IMPORTED = "imported"


@dataclass(frozen=True)
class Stage:
    name: str
    config_keys: tuple[str, ...]
    # (resolved config, output dir, fresh): fresh = rebuild from scratch; otherwise a stage
    # that can resume (training) continues its unfinished run
    run: Callable[[dict[str, Any], Path, bool], Any]
    show: Callable[[Path], str] | None = None
    # whether the stage applies to this config
    needed: Callable[[dict[str, Any]], bool] = lambda cfg: True


def _show_data(path: Path) -> str:
    ds, manifest = read_dataset(path)
    return format_stats(dataset_stats(ds), f"dataset {path} ({manifest['source']})")


def _imported(cfg: dict[str, Any]) -> bool:
    return cfg["sid"]["method"] == IMPORTED


def _embed(cfg: dict[str, Any], out: Path, fresh: bool) -> None:
    embed_dataset(stage_path(cfg, "data"), out, cfg["embed"], overwrite=True)


def _sid(cfg: dict[str, Any], out: Path, fresh: bool) -> None:
    if _imported(cfg):
        import_sids_from_config(cfg, out, overwrite=True)
    else:
        build_sids(stage_path(cfg, "embeddings"), out, cfg["sid"], cfg["seed"], overwrite=True)


def _examples(cfg: dict[str, Any], out: Path, fresh: bool) -> None:
    convert(stage_path(cfg, "data"), stage_path(cfg, "sid"), out, cfg, overwrite=True)


def _sft(cfg: dict[str, Any], out: Path, fresh: bool) -> None:
    train_sft(stage_path(cfg, "examples"), out, cfg, resume=not fresh, overwrite=fresh)


def _evaluate(cfg: dict[str, Any], out: Path, fresh: bool) -> None:
    paths = [stage_path(cfg, name) for name in ("sft", "data", "sid")]
    evaluate_model(*paths, out, cfg, overwrite=True)


def _show_results(out: Path) -> str:
    results = read_json(out / RESULTS_FILE)
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in results["metrics"].items())
    return f"{results['split']} ({results['users']} users, {results['seconds']} s): {metrics}"


STAGES = (
    Stage("data", ("seed", "data"), lambda c, o, f: build_from_config(c, o, True), _show_data),
    Stage("embeddings", ("embed",), _embed, needed=lambda c: not _imported(c)),
    Stage("sid", ("seed", "sid"), _sid, lambda p: report_sids(sid=p)[1]),
    Stage("examples", ("seed", "convert", "sft"), _examples),
    Stage("sft", ("seed", "model", "generation", "sft"), _sft),
    Stage("evaluate", ("seed", "evaluate"), _evaluate, _show_results),
)


def previous_config(path: Path) -> dict[str, Any] | None:
    """The config of the last run, with keys added to sidrec since then at their defaults (so
    a new option does not make finished stages look changed); None if there was no run."""
    if not path.exists():
        return None
    try:
        return load_config(path)
    except SidrecError:  # a key that no longer exists: compare as written
        return yaml.safe_load(path.read_text())


def same_config(previous: dict[str, Any] | None, cfg: dict[str, Any], keys: Iterable[str]) -> bool:
    """Whether the sections ``keys`` of ``cfg`` equal those of a ``previous`` run's config
    (from ``previous_config``; None: there was none)."""
    return previous is not None and all(previous.get(k) == cfg[k] for k in keys)


def run_pipeline(
    cfg: dict[str, Any],
    force: bool = False,
    log: Callable[[str], None] = print,
    until: str | None = None,
) -> dict[str, Path]:
    """Run every stage (up to and including ``until``) for the resolved config ``cfg``;
    return each stage's output directory."""
    names = [st.name for st in STAGES]
    if until is not None and until not in names:
        raise SidrecError(f"--until must be one of {names}, got {until!r}")
    root = Path(cfg["output_root"]) / cfg["run_name"]
    root.mkdir(parents=True, exist_ok=True)
    previous = previous_config(root / CONFIG_FILE)
    outputs: dict[str, Path] = {}
    rebuild = force
    for stage in STAGES:
        if not stage.needed(cfg):
            log(f"[{stage.name}] not needed for this config")
            continue
        out = stage_path(cfg, stage.name)
        same = same_config(previous, cfg, stage.config_keys)
        if not rebuild and same and is_complete(out):
            log(f"[{stage.name}] complete and unchanged: {out}")
        else:
            log(f"[{stage.name}] building {out}")
            stage.run(cfg, out, rebuild or not same)
            rebuild = True
        if stage.show is not None:
            log(stage.show(out))
        outputs[stage.name] = out
        if stage.name == until:
            break
    write_yaml(root / CONFIG_FILE, cfg)
    return outputs


def _run(a: argparse.Namespace) -> None:
    run_pipeline(load_config(a.config, a.overrides), a.force, until=a.until)


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="run every stage from one config (the one-shot run)")
    p.add_argument("--config", type=Path, required=True, help="a profile, e.g. configs/demo.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--force", action="store_true", help="rebuild every stage")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage (e.g. sid)")
    p.set_defaults(func=_run)
