"""``sidrec pipeline``: every stage that exists, in order, from one config.

Stages: data -> embeddings -> sid -> examples -> sft -> evaluate -> rl -> evaluate_rl (the RL
model evaluated like the SFT one; both RL stages run when ``rl.enabled``). Outputs go to
``paths.<stage>``, by default ``<output_root>/<run_name>/<stage>``. Each stage decides from its
own output: the manifest records the config sections it was made with and the run id of every
input it read. A stage whose output is complete, made with the same sections from the inputs
that are there now, is skipped; an interrupted SFT whose unfinished run was started that way
resumes from its newest checkpoint; anything else is rebuilt (and a rebuilt stage's new run id
makes every stage that read it out of date). With ``sid.method=imported`` the source's own SIDs
are used and nothing is embedded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidrec.config import defaults, stage_path
from sidrec.data.dataset import read_dataset
from sidrec.data.stage import build_from_config, import_sids_from_config
from sidrec.data.stats import dataset_stats, format_stats
from sidrec.errors import SidrecError
from sidrec.evaluate.generative import evaluate_model
from sidrec.io import MANIFEST, RESULTS_FILE, is_complete, read_json
from sidrec.ledger import describe
from sidrec.manifest import recording, run_id
from sidrec.rq.embed import embed_dataset
from sidrec.rq.stage import build_sids, report_sids
from sidrec.sft.convert import convert
from sidrec.sft.train import train_sft
from sidrec.training import RUN_FILE, work_dir

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


def _evaluator(model_stage: str) -> Callable[[dict[str, Any], Path, bool], None]:
    def run(cfg: dict[str, Any], out: Path, fresh: bool) -> None:
        paths = [stage_path(cfg, name) for name in (model_stage, "data", "sid")]
        evaluate_model(*paths, out, cfg, overwrite=True)

    return run


def _rl(cfg: dict[str, Any], out: Path, fresh: bool) -> None:
    from sidrec.rl.cli import run_rl

    run_rl(cfg, resume=not fresh, overwrite=fresh)


def _rl_enabled(cfg: dict[str, Any]) -> bool:
    return bool(cfg["rl"]["enabled"])


def _show_results(out: Path) -> str:
    results = read_json(out / RESULTS_FILE)
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in results["metrics"].items())
    return f"{results['split']} ({results['users']} users, {results['seconds']} s): {metrics}"


STAGES = (
    Stage("data", ("seed", "data"), lambda c, o, f: build_from_config(c, o, True), _show_data),
    Stage("embeddings", ("embed",), _embed, needed=lambda c: not _imported(c)),
    Stage("sid", ("seed", "sid"), _sid, lambda p: report_sids(sid=p)[1]),
    Stage("examples", ("seed", "convert", "sft.format", "sft.max_length"), _examples),
    Stage("sft", ("seed", "model", "generation", "sft"), _sft),
    Stage("evaluate", ("seed", "evaluate"), _evaluator("sft"), _show_results),
    Stage(
        "rl", ("seed", "rl", "evaluate.num_beams", "evaluate.batch_size"), _rl, needed=_rl_enabled
    ),
    Stage("evaluate_rl", ("seed", "evaluate"), _evaluator("rl"), _show_results, needed=_rl_enabled),
)


def _at_defaults(default: Any, recorded: Any) -> Any:
    """``recorded`` with keys added to sidrec since then at their defaults and keys since
    removed dropped, so a new option does not make finished stages look changed."""
    if not (isinstance(default, dict) and isinstance(recorded, dict)):
        return recorded
    return {k: _at_defaults(v, recorded[k]) if k in recorded else v for k, v in default.items()}


def _section(cfg: dict[str, Any], key: str) -> Any:
    """``cfg[a][b]`` for the dotted ``key`` ``a.b``; None where it does not exist."""
    for part in key.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def _made_as(record: dict[str, Any], want: dict[str, Any]) -> bool:
    """Whether a manifest (or an unfinished run's record) says it was made with the config
    sections ``want`` from the inputs that are there now."""
    sections = record.get("pipeline")
    if sections is None:
        return False
    base = defaults()
    if {k: _at_defaults(_section(base, k), v) for k, v in sections.items()} != want:
        return False
    inputs = record.get("inputs", {})
    return all(run_id(inputs[k]) == rid for k, rid in record.get("input_runs", {}).items())


def stage_state(out: Path, want: dict[str, Any]) -> str:
    """``current`` (complete, made with the config sections ``want`` from the inputs there
    now), ``resumable`` (an unfinished training run started that way) or ``stale``."""
    started = work_dir(out) / RUN_FILE
    if is_complete(out):
        record, state = read_json(out / MANIFEST), "current"
    elif started.is_file():
        record, state = read_json(started), "resumable"
    else:
        return "stale"
    return state if _made_as(record, want) else "stale"


def _check_suggested_for(cfg: dict[str, Any], data: Path) -> None:
    """Refuse an overlay that ``sidrec suggest`` made for another dataset."""
    want, found = cfg["suggested_for"], describe(data, "source", "dataset")
    if want is not None and want != found:
        raise SidrecError(
            f"the config's overlay was suggested for dataset {want!r}, but {data} is {found!r}; "
            "analyze this dataset's own evaluation and suggest again"
        )


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
    outputs: dict[str, Path] = {}
    for stage in STAGES:
        if not stage.needed(cfg):
            log(f"[{stage.name}] not needed for this config")
            continue
        out = stage_path(cfg, stage.name)
        want = {k: _section(cfg, k) for k in stage.config_keys}
        state = "stale" if force else stage_state(out, want)
        if state == "current":
            log(f"[{stage.name}] complete and unchanged: {out}")
        else:
            log(f"[{stage.name}] {'resuming' if state == 'resumable' else 'building'} {out}")
            with recording(want):
                stage.run(cfg, out, state != "resumable")
        if stage.name == "data":
            _check_suggested_for(cfg, out)
        if stage.show is not None:
            log(stage.show(out))
        outputs[stage.name] = out
        if stage.name == until:
            break
    return outputs
