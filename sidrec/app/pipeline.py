"""``sidrec pipeline``: every stage that exists, in order, from one config.

Stages: data -> embeddings -> sid -> examples -> sft -> evaluate -> rl -> evaluate_rl (the RL
model evaluated like the SFT one; both RL stages run when ``rl.enabled``) -> analyze (the
bad-case report of the last evaluation) -> suggest (every strategy past its threshold, as a
config overlay). Outputs go to
``paths.<stage>``, by default ``<output_root>/<run_name>/<stage>``. Each stage decides from its
own output: the manifest records the config sections it was made with and the run id of every
input it read. A stage whose output is complete, made with the same sections from the inputs
that are there now, is skipped; an interrupted SFT whose unfinished run was started that way
resumes from its newest checkpoint; anything else is rebuilt (and a rebuilt stage's new run id
makes every stage that read it out of date). With ``sid.method=imported`` the source's own SIDs
are used and nothing is embedded.

``start`` and ``until`` bound the stages that run (earlier ones must be complete and are used as
they are); ``choose`` decides per stage (run, skip, reuse the output as it is, stop), which
``sidrec pipeline --ask`` does in the terminal. The run ends with a summary: what each stage
did and how long it took, every output, and the metrics of each evaluated model beside the
popularity and item-to-item baselines on the same users.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidrec.core.config import defaults, dotted, model_family, stage_path
from sidrec.core.dataset import read_dataset
from sidrec.core.errors import SidrecError
from sidrec.core.io import MANIFEST, RESULTS_FILE, is_complete, read_json
from sidrec.core.ledger import describe
from sidrec.core.manifest import recording, run_id
from sidrec.core.training import RUN_FILE, work_dir
from sidrec.data.stage import build_from_config, import_sids_from_config
from sidrec.data.stats import dataset_stats, format_stats
from sidrec.evaluate.generative import evaluate_model
from sidrec.rq.embed import embed_dataset
from sidrec.rq.stage import build_sids, report_sids
from sidrec.sft.convert import convert
from sidrec.sft.train import train_sft
from sidrec.sft.tree import TEACHER_STAGE, train_tree

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
    embed_dataset(stage_path(cfg, "data"), out, cfg, overwrite=True)


def _sid(cfg: dict[str, Any], out: Path, fresh: bool) -> None:
    if _imported(cfg):
        import_sids_from_config(cfg, out, overwrite=True)
    else:
        build_sids(stage_path(cfg, "embeddings"), out, cfg, overwrite=True)


def _examples(cfg: dict[str, Any], out: Path, fresh: bool) -> None:
    convert(stage_path(cfg, "data"), stage_path(cfg, "sid"), out, cfg, overwrite=True)


def _lm(cfg: dict[str, Any]) -> bool:
    return model_family(cfg) == "lm"


def _distils_sasrec(cfg: dict[str, Any]) -> bool:
    """Whether the tree model distils the SASRec this pipeline trains (``tree.teacher:
    sasrec``)."""
    return not _lm(cfg) and cfg["tree"]["teacher"] == TEACHER_STAGE


def _sasrec(cfg: dict[str, Any], out: Path, fresh: bool) -> None:
    from sidrec.baselines.sasrec import train_sasrec

    train_sasrec(stage_path(cfg, "data"), out, cfg, overwrite=True)


def _sft(cfg: dict[str, Any], out: Path, fresh: bool) -> None:
    if _lm(cfg):
        train_sft(stage_path(cfg, "examples"), out, cfg, resume=not fresh, overwrite=fresh)
    else:
        data, sid = stage_path(cfg, "data"), stage_path(cfg, "sid")
        train_tree(data, sid, out, cfg, resume=not fresh, overwrite=fresh)


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


def _last_evaluation(cfg: dict[str, Any]) -> Path:
    return stage_path(cfg, "evaluate_rl" if _rl_enabled(cfg) else "evaluate")


def _analyze(cfg: dict[str, Any], out: Path, fresh: bool) -> None:
    from sidrec.analysis.analyze import analyze

    emb = None if _imported(cfg) else stage_path(cfg, "embeddings")
    top_k = min(cfg["analysis"]["top_k"], cfg["evaluate"]["num_beams"])
    analyze(
        _last_evaluation(cfg), out, embeddings=emb, top_k=top_k, seed=cfg["seed"], overwrite=True
    )


def _show_analysis(out: Path) -> str:
    from sidrec.analysis.analyze import REPORT_FILE

    report = read_json(out / REPORT_FILE)
    return (
        f"failure rate {report['failure_rate']:.1%} at top {report['top_k']}: {out / 'report.html'}"
    )


def _suggest(cfg: dict[str, Any], out: Path, fresh: bool) -> None:
    from sidrec.analysis.suggest import write_suggestion

    write_suggestion(stage_path(cfg, "analyze"), out, overwrite=True)


def _show_suggestion(out: Path) -> str:
    from sidrec.analysis.suggest import OVERLAY_FILE, STRATEGIES_FILE

    chosen = read_json(out / STRATEGIES_FILE)["chosen"]
    if not chosen:
        return "no strategy past its threshold"
    return f"{', '.join(chosen)}: --overlay {out / OVERLAY_FILE}"


STAGES = (
    Stage("data", ("seed", "data"), lambda c, o, f: build_from_config(c, o, True), _show_data),
    Stage("embeddings", ("embed",), _embed, needed=lambda c: not _imported(c)),
    Stage("sid", ("seed", "sid"), _sid, lambda p: report_sids(sid=p)[1]),
    Stage("examples", ("seed", "convert", "sft.format", "sft.max_length"), _examples, needed=_lm),
    Stage("sasrec", ("seed", "data", "sasrec", "evaluate"), _sasrec, needed=_distils_sasrec),
    Stage("sft", ("seed", "model", "generation", "sft", "tree", "decoding"), _sft),
    Stage("evaluate", ("seed", "evaluate", "decoding"), _evaluator("sft"), _show_results),
    Stage(
        "rl",
        ("seed", "rl", "decoding", "evaluate.num_beams", "evaluate.batch_size"),
        _rl,
        needed=_rl_enabled,
    ),
    Stage(
        "evaluate_rl",
        ("seed", "evaluate", "decoding"),
        _evaluator("rl"),
        _show_results,
        needed=_rl_enabled,
    ),
    # which evaluation it reads (the RL model's when RL runs) is part of what it was made from
    Stage("analyze", ("seed", "analysis", "rl.enabled"), _analyze, _show_analysis),
    Stage("suggest", ("analysis",), _suggest, _show_suggestion),
)
NAMES = tuple(st.name for st in STAGES)
# what a stage can be told to do (sidrec pipeline --ask)
ACTIONS = ("run", "skip", "reuse", "stop")


def _at_defaults(default: Any, recorded: Any) -> Any:
    """``recorded`` with keys added to sidrec since then at their defaults and keys since
    removed dropped, so a new option does not make finished stages look changed."""
    if not (isinstance(default, dict) and isinstance(recorded, dict)):
        return recorded
    return {k: _at_defaults(v, recorded[k]) if k in recorded else v for k, v in default.items()}


def _made_as(record: dict[str, Any], want: dict[str, Any]) -> bool:
    """Whether a manifest (or an unfinished run's record) says it was made with the config
    sections ``want`` from the inputs that are there now."""
    sections = record.get("pipeline")
    if sections is None:
        return False
    base = defaults()
    if {k: _at_defaults(dotted(base, k), v) for k, v in sections.items()} != want:
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


@dataclass
class StageRun:
    """What one stage did in a pipeline run: built, resumed, reused or skipped, and how long
    its output took to make (this run's, or the recorded run's when reused)."""

    name: str
    action: str
    output: Path
    seconds: float | None = None


def default_action(state: str) -> str:
    """What a stage in ``state`` does unless told otherwise: reuse a current output, build or
    resume the rest."""
    return "reuse" if state == "current" else "run"


def _check_bounds(start: str | None, until: str | None) -> None:
    for given, flag in ((start, "--from"), (until, "--to")):
        if given is not None and given not in NAMES:
            raise SidrecError(f"{flag} must be one of {list(NAMES)}, got {given!r}")
    if start and until and NAMES.index(start) > NAMES.index(until):
        raise SidrecError(f"--from {start} comes after --to {until}")


def run_pipeline(
    cfg: dict[str, Any],
    force: bool = False,
    log: Callable[[str], None] = print,
    until: str | None = None,
    start: str | None = None,
    choose: Callable[[str, str, Path], str] | None = None,
    runs: list[StageRun] | None = None,
) -> dict[str, Path]:
    """Run the stages from ``start`` to ``until`` (default: all) for the resolved config
    ``cfg``; return each used stage's output directory. Stages before ``start`` must be
    complete and are used as they are. ``choose(stage, state, out)`` -> one of
    :data:`ACTIONS` decides each stage in range (default: reuse a current output, build or
    resume the rest); ``runs`` collects a :class:`StageRun` per stage."""
    _check_bounds(start, until)
    runs = [] if runs is None else runs
    outputs: dict[str, Path] = {}
    begun = start is None
    for stage in STAGES:
        begun = begun or stage.name == start
        if not stage.needed(cfg):
            log(f"[{stage.name}] not needed for this config")
            continue
        out = stage_path(cfg, stage.name)
        want = {k: dotted(cfg, k) for k in stage.config_keys}
        state = "stale" if force else stage_state(out, want)
        action = "reuse" if not begun else default_action(state)
        if begun and choose is not None:
            action = choose(stage.name, state, out)
            if action not in ACTIONS:
                raise SidrecError(f"a stage's action must be one of {ACTIONS}, got {action!r}")
        if action == "stop":
            log(f"[{stage.name}] stopping here")
            break
        if action == "skip":
            log(f"[{stage.name}] skipped")
            runs.append(StageRun(stage.name, "skipped", out))
            if stage.name == until:
                break
            continue
        if action == "reuse":
            if not is_complete(out):
                raise SidrecError(
                    f"[{stage.name}] has no complete output at {out} to use: run it, or start "
                    "earlier (--from)"
                )
            how = "complete and unchanged" if state == "current" else "used as it is"
            log(f"[{stage.name}] {how}: {out}")
            seconds = read_json(out / MANIFEST).get("seconds")
            runs.append(StageRun(stage.name, "reused", out, seconds))
        else:
            resume = state == "resumable"
            log(f"[{stage.name}] {'resuming' if resume else 'building'} {out}")
            t0 = time.perf_counter()
            with recording(want):
                stage.run(cfg, out, not resume)
            elapsed = round(time.perf_counter() - t0, 1)
            runs.append(StageRun(stage.name, "resumed" if resume else "built", out, elapsed))
        if stage.name == "data":
            _check_suggested_for(cfg, out)
        if stage.show is not None:
            log(stage.show(out))
        outputs[stage.name] = out
        if stage.name == until:
            break
    return outputs


SUMMARY_METRICS = ("HR@5", "HR@10", "NDCG@5", "NDCG@10")


def _metric_row(name: str, users: Any, metrics: dict[str, float]) -> str:
    cells = "".join(f"{metrics[m]:>9.4f}" if m in metrics else f"{'-':>9}" for m in SUMMARY_METRICS)
    return f"{name:<24}{users!s:>7}{cells}"


def format_summary(runs: list[StageRun]) -> str:
    """The end of a pipeline run: what each stage did, its time and output; then each
    evaluated model's metrics beside the popularity and item-to-item baselines."""
    lines = [f"{'stage':<13}{'did':<9}{'seconds':>9}  output"]
    for r in runs:
        took = "-" if r.seconds is None else f"{r.seconds:.1f}"
        lines.append(f"{r.name:<13}{r.action:<9}{took:>9}  {r.output}")
    evaluated = [
        (r.name, read_json(r.output / RESULTS_FILE))
        for r in runs
        if r.name.startswith("evaluate") and r.action != "skipped"
    ]
    if evaluated:
        header = "".join(f"{m:>9}" for m in SUMMARY_METRICS)
        lines += ["", f"{'model':<24}{'users':>7}{header}"]
        for name, results in evaluated:
            model = "rl" if name == "evaluate_rl" else "sft"
            lines.append(_metric_row(f"{model} ({name})", results["users"], results["metrics"]))
        _, last = evaluated[-1]
        for base, metrics in last.get("baselines", {}).items():
            lines.append(_metric_row(base.replace("_", "-"), last["users"], metrics))
    return "\n".join(lines)
