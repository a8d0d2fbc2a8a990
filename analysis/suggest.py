"""``sidrec suggest``: from a bad-case report to a config overlay the stages act on.

Six strategies, each with the evidence it reads, a documented threshold, and changes to keys
that ``sidrec sid build``, ``sidrec convert`` and ``sidrec sft`` read:

- ``long_tail``: the recommendations hold less than half the long-tail share of the targets
  -> ``convert.popularity_balance`` (draw examples against target popularity; prompt-format
  SFT only, as is ``recency_bias``).
- ``cold_start``: 2%+ of the users have a cold target (never a training target) and HR@K on
  them is below half the rest's -> more title -> SID alignment (``convert.tasks.title_to_sid``)
  and SID tokens started at their items' title embedding (``model.sid_token_init``).
- ``short_history``: 10%+ of the users have 1-2 history items and HR@K on them is below 80% of
  the rest's -> the title-history task (``convert.tasks.title_history_to_sid``).
- ``sid_quality``: SIDs shared by several items, or a level using under half its codes ->
  ``sid.dedup`` / ``sid.method`` (balanced codes; imported SIDs, kept as shipped, are replaced
  by SIDs built from the item text).
- ``recency_bias``: 30%+ of the users' targets are closer to their last items than to the
  older ones and those fail more often than the rest -> ``convert.recent_items``.
- ``hyperparameter``: the valid loss ended 5%+ above its best (overfitting) -> 0.1 more
  dropout (at least 0.1, at most 0.5) and checkpoint choice by NDCG@10; or the best
  checkpoint was the last one (still improving) -> twice the epochs (twice
  ``sft.max_steps`` where a step budget is set).

A change the evaluated model's config already has is dropped, and a strategy with nothing left
to change is not proposed. Title-based changes are only suggested for datasets with titles and
a model whose vocabulary holds words (not a SID-only one). The overlay names the dataset it was
made for (``suggested_for``); the data stage refuses it for another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sidrec.analysis.analyze import REPORT_FILE
from sidrec.core.config import dotted, load_config, model_family, model_reads_text
from sidrec.core.errors import InputError, SidrecError
from sidrec.core.io import atomic_dir, read_json, write_json
from sidrec.core.manifest import Run

STRATEGIES = (
    "long_tail",
    "cold_start",
    "short_history",
    "sid_quality",
    "recency_bias",
    "hyperparameter",
)
CONFIG_FILE = "config.yaml"
# the pipeline's suggest stage writes these
OVERLAY_FILE = "suggested.yaml"
STRATEGIES_FILE = "strategies.json"


@dataclass
class Strategy:
    """One strategy's verdict: whether its threshold is crossed, on what evidence, and the
    config changes (dotted keys) it proposes."""

    name: str
    threshold: str
    triggered: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, Any] = field(default_factory=dict)


def _label(report: dict[str, Any], segment: str, label: str) -> dict[str, Any] | None:
    return next((r for r in report["segments"].get(segment, []) if r["label"] == label), None)


def _ratio(row: dict[str, Any], k: int) -> float | None:
    rest = row[f"HR@{k}_rest"]
    return None if not rest else row[f"HR@{k}"] / rest


def _base_config(report: dict[str, Any]) -> dict[str, Any]:
    """The evaluated model's config (what the changes start from), or the defaults."""
    training = report.get("training") or {}
    path = Path(training.get("model", "")) / CONFIG_FILE
    return load_config(path if training and path.is_file() else None)


def _prompt_examples(cfg: dict[str, Any], s: Strategy) -> bool:
    """Whether SFT trains on prompt-format examples, which ``convert.popularity_balance`` and
    ``convert.recent_items`` shape (``sft.format=sequence`` trains whole sequences); noted in
    ``s``'s evidence when not (nor does the tree family, which trains on sequences)."""
    if model_family(cfg) == "tree":
        s.evidence["not_applicable"] = "model.family=tree: no examples"
        return False
    if cfg["sft"]["format"] == "prompt":
        return True
    s.evidence["not_applicable"] = f"sft.format={cfg['sft']['format']}: no per-target examples"
    return False


def long_tail(report: dict[str, Any], cfg: dict[str, Any]) -> Strategy:
    s = Strategy("long_tail", "long-tail share of recommendations < 0.5 x that of the targets")
    rec = report["recommended"]
    share, want = rec["long_tail_share_recommended"], rec["long_tail_share_targets"]
    s.evidence = {"long_tail_share_recommended": share, "long_tail_share_targets": want}
    s.triggered = want > 0 and share < 0.5 * want and _prompt_examples(cfg, s)
    s.changes = {"convert.popularity_balance": max(0.5, cfg["convert"]["popularity_balance"])}
    return s


def _weak_label(
    report: dict[str, Any],
    cfg: dict[str, Any],
    s: Strategy,
    segment: str,
    label: str,
    share: float,
    ratio: float,
) -> Strategy:
    """Fire ``s`` when ``label`` of ``segment`` holds ``share``+ of the users and its HR@K is
    below ``ratio`` x the rest's (title-based strategies: only where items have titles and the
    model's vocabulary can read them)."""
    row = _label(report, segment, label)
    if row is None:
        s.evidence = {f"{label} users": 0}
        return s
    found = _ratio(row, report["top_k"])
    text = report["titles"] and model_reads_text(cfg)
    s.evidence = {
        f"{label} share of users": row["share_of_users"],
        "hr_ratio_to_rest": found,
        "titles_readable": text,
    }
    s.triggered = text and row["share_of_users"] >= share and found is not None and found < ratio
    return s


def cold_start(report: dict[str, Any], cfg: dict[str, Any]) -> Strategy:
    k = report["top_k"]
    s = Strategy("cold_start", f"cold targets >= 2% of users and their HR@{k} < 0.5 x the rest's")
    s.changes = {
        "convert.tasks.title_to_sid": max(1.0, 2 * cfg["convert"]["tasks"]["title_to_sid"]),
        "model.sid_token_init": "title-mean",
    }
    return _weak_label(report, cfg, s, "popularity", "cold", 0.02, 0.5)


def short_history(report: dict[str, Any], cfg: dict[str, Any]) -> Strategy:
    k = report["top_k"]
    s = Strategy(
        "short_history", f"1-2 item histories >= 10% of users and their HR@{k} < 0.8 x the rest's"
    )
    tasks = cfg["convert"]["tasks"]
    s.changes = {"convert.tasks.title_history_to_sid": max(0.5, tasks["title_history_to_sid"])}
    return _weak_label(report, cfg, s, "history_length", "1-2 items", 0.1, 0.8)


def sid_quality(report: dict[str, Any], cfg: dict[str, Any]) -> Strategy:
    s = Strategy("sid_quality", "any SID shared by 2+ items, or a level using < 50% of its codes")
    q = report.get("sid_quality")
    if not q:
        return s
    low = [lv["level"] for lv in q["levels"] if lv["utilization"] < 0.5]
    s.evidence = {"shared_sids": q["shared_sids"], "levels_under_half_used": low}
    s.triggered = q["shared_sids"] > 0 or bool(low)
    if cfg["sid"]["method"] == "imported":
        # shipped SIDs are kept as they are: build unique, balanced ones from the item text
        s.triggered = s.triggered and report["titles"]
        s.changes = {"sid.method": "rqkmeans-constrained", "sid.dedup": "reassign"}
        return s
    if q["shared_sids"] > 0:
        s.changes["sid.dedup"] = "reassign"
    if low:
        s.changes["sid.method"] = "rqkmeans-constrained"
    return s


def recency_bias(report: dict[str, Any], cfg: dict[str, Any]) -> Strategy:
    s = Strategy(
        "recency_bias",
        "targets closer to the last items >= 30% of users and failing more than the rest",
    )
    row = _label(report, "recency", "recent")
    if row is None:
        return s
    rest_hr = row[f"HR@{report['top_k']}_rest"]
    rest_failure = None if rest_hr is None else 1 - rest_hr
    s.evidence = {
        "recent_share_of_users": row["share_of_users"],
        "failure_rate": row["failure_rate"],
        "failure_rate_rest": rest_failure,
    }
    s.triggered = (
        row["share_of_users"] >= 0.3
        and rest_failure is not None
        and row["failure_rate"] > rest_failure
        and _prompt_examples(cfg, s)
    )
    s.changes = {"convert.recent_items": cfg["convert"]["recent_items"] or 3}
    return s


def hyperparameter(report: dict[str, Any], cfg: dict[str, Any]) -> Strategy:
    s = Strategy(
        "hyperparameter",
        "valid loss ended >= 5% above its best (overfit), or the best checkpoint was the last",
    )
    t = report.get("training") or {}
    best, last = t.get("eval_loss_best"), t.get("eval_loss_last")
    if best is None or last is None:
        return s
    steps = t.get("steps")
    at_end = t.get("best_checkpoint") == f"checkpoint-{steps}"
    s.evidence = {"eval_loss_best": best, "eval_loss_last": last, "best_is_last": at_end}
    sft = cfg["sft"]
    if last >= 1.05 * best:
        s.triggered = True
        # at least 0.1, and 0.1 more than the model had, up to 0.5
        s.changes = {
            f"sft.{k}": round(min(0.5, max(0.1, sft[k] + 0.1)), 3)
            for k in ("residual_dropout", "embedding_dropout")
        }
        s.changes["sft.select_by"] = "ndcg@10"
    elif at_end:
        s.triggered = True
        # a step budget (sft.max_steps > 0) overrides epochs: double whichever bounds training
        budget = "max_steps" if sft["max_steps"] > 0 else "epochs"
        s.changes = {f"sft.{budget}": 2 * sft[budget]}
    return s


RULES: dict[str, Callable[[dict[str, Any], dict[str, Any]], Strategy]] = {
    "long_tail": long_tail,
    "cold_start": cold_start,
    "short_history": short_history,
    "sid_quality": sid_quality,
    "recency_bias": recency_bias,
    "hyperparameter": hyperparameter,
}


def _new_changes(s: Strategy, cfg: dict[str, Any]) -> Strategy:
    """Keep only the changes the evaluated model's config does not already have; a strategy
    past its threshold with nothing left to change is not proposed again."""
    s.changes = {k: v for k, v in s.changes.items() if dotted(cfg, k) != v}
    if s.triggered and not s.changes:
        s.triggered = False
        s.evidence["already_applied"] = True
    return s


def nest(changes: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys as nested mappings: ``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _read_report(path: Path) -> dict[str, Any]:
    report = read_json(path)
    need = ("segments", "recommended", "top_k", "dataset")
    if not isinstance(report, dict) or any(k not in report for k in need):
        raise InputError(path, f"is not a badcase_report.json of `sidrec analyze` (needs {need})")
    return report


def suggest(
    report_path: str | Path,
    out: str | Path,
    auto: bool = True,
    choose: Callable[[list[Strategy]], list[str]] | None = None,
) -> dict[str, Any]:
    """Judge every strategy on the report at ``report_path`` and write the chosen ones'
    changes as a config overlay at ``out``. ``auto`` takes every triggered strategy; otherwise
    ``choose`` picks names from all of them. Returns the verdicts and the overlay."""
    report = _read_report(Path(report_path))
    cfg = _base_config(report)
    verdicts = [_new_changes(RULES[name](report, cfg), cfg) for name in STRATEGIES]
    if auto:
        chosen = [v.name for v in verdicts if v.triggered]
    else:
        if choose is None:
            raise SidrecError("without --auto, strategies are chosen in a terminal")
        chosen = choose(verdicts)
        unknown = set(chosen) - set(STRATEGIES)
        if unknown:
            raise SidrecError(f"unknown strategies {sorted(unknown)}; choose from {STRATEGIES}")
    changes: dict[str, Any] = {}
    for v in verdicts:
        if v.name in chosen:
            changes.update(v.changes)
    overlay = nest({**changes, "suggested_for": report["dataset"]})
    header = [f"# sidrec suggest from {report_path}: {', '.join(chosen) or 'no strategy'}"]
    for v in verdicts:
        mark = "chosen" if v.name in chosen else ("triggered" if v.triggered else "not triggered")
        header.append(f"# {v.name} ({mark}): {v.threshold}; evidence {v.evidence}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(header) + "\n" + yaml.safe_dump(overlay, sort_keys=False))
    try:
        load_config(None, overlays=[tmp])  # every key exists and has the right type
    except SidrecError:
        tmp.unlink()
        raise
    tmp.replace(out)
    return {
        "chosen": chosen,
        "strategies": [v.__dict__ for v in verdicts],
        "overlay": overlay,
        "written": str(out),
    }


def write_suggestion(
    analysis: str | Path, out: str | Path, overwrite: bool = False
) -> dict[str, Any]:
    """The pipeline's ``suggest`` stage: judge the report of the ``sidrec analyze`` output
    ``analysis`` and write every triggered strategy's overlay (``suggested.yaml``) and the
    verdicts (``strategies.json``) into the directory ``out``. Returns the verdicts."""
    out = Path(out)
    run = Run("suggest", {"auto": True}, {"analysis": str(analysis)}, None)
    with atomic_dir(out, overwrite) as tmp:
        result = suggest(Path(analysis) / REPORT_FILE, tmp / OVERLAY_FILE, auto=True)
        result["written"] = str(out / OVERLAY_FILE)
        write_json(tmp / STRATEGIES_FILE, result)
        run.finish(tmp, {"chosen": len(result["chosen"])})
    return result


def ask(verdicts: list[Strategy]) -> list[str]:
    """Ask in the terminal which strategies to apply (default: the triggered ones)."""
    for i, v in enumerate(verdicts, 1):
        state = "TRIGGERED" if v.triggered else "not triggered"
        print(f"{i}. {v.name} [{state}] {v.threshold}")
        print(f"   evidence {v.evidence}\n   changes {v.changes}")
    default = ",".join(str(i) for i, v in enumerate(verdicts, 1) if v.triggered)
    answer = input(f"strategies to apply (numbers, comma-separated) [{default}]: ").strip()
    picked = answer or default
    try:
        return [verdicts[int(x) - 1].name for x in picked.split(",") if x.strip()]
    except (ValueError, IndexError):
        raise SidrecError(f"expected numbers 1..{len(verdicts)}, got {answer!r}") from None
