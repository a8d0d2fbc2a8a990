"""``sidrec analyze``: the bad-case report of an evaluation (:mod:`sidrec.analysis.badcase`
defines what is measured).

Reads an evaluation directory (``predictions.parquet``, ``manifest.json``), the dataset and
SIDs it was made from (or the ones given), optionally item embeddings, and writes
``eval_results.jsonl``, ``badcase_report.json``, ``summary_report.txt``,
``visualizations/*.png`` and a self-contained ``report.html`` into a new output directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sidrec.analysis import badcase as bc
from sidrec.analysis.html import write_html
from sidrec.analysis.plots import write_plots
from sidrec.core.dataset import read_dataset
from sidrec.core.errors import InputError, SidrecError, require_file
from sidrec.core.io import MANIFEST, PREDICTIONS_FILE, atomic_dir, read_json, write_json
from sidrec.core.ledger import describe
from sidrec.core.manifest import Run
from sidrec.core.metrics import hr_ndcg
from sidrec.core.sequences import training_frequency
from sidrec.core.sids import SidTable, read_sid_dir, sid_summary

REPORT_FILE = "badcase_report.json"
NEEDED = ("user_id", "history", "target", "ranked_items", "rank")
EXAMPLES = 12


def _predictions(eval_dir: Path) -> pl.DataFrame:
    file = require_file(eval_dir / PREDICTIONS_FILE, "predictions file")
    frame = pl.read_parquet(file)
    missing = [c for c in NEEDED if c not in frame.columns]
    if missing:
        raise InputError(file, f"lacks the columns {missing}; expected {list(NEEDED)}")
    if frame.height == 0:
        raise InputError(file, "has no rows; evaluate some users first")
    return frame


def _inputs(
    eval_dir: Path, inputs: dict[str, str], data: Path | None, sid: Path | None
) -> tuple[Path, Path | None]:
    """The dataset and SID directories: given, or those the evaluation read (``inputs``)."""
    data = data or (Path(inputs["data"]) if "data" in inputs else None)
    if data is None:
        raise SidrecError(f"{eval_dir}: its manifest names no dataset; pass --data")
    sid = sid or (Path(inputs["sid"]) if "sid" in inputs else None)
    return data, sid


def _evaluation_inputs(eval_dir: Path) -> dict[str, str]:
    manifest = read_json(require_file(eval_dir / MANIFEST, "evaluation manifest"))
    return manifest.get("inputs", {})


def _training(inputs: dict[str, str]) -> dict[str, Any] | None:
    """What the evaluated model's training said (its manifest and config), when it has them:
    what ``sidrec suggest`` bases the hyperparameter strategy on."""
    model = inputs.get("model")
    if model is None or not (Path(model) / MANIFEST).is_file():
        return None
    m = read_json(Path(model) / MANIFEST)
    keys = (
        "stage",
        "eval_loss_first",
        "eval_loss_best",
        "eval_loss_last",
        "select_by",
        "best_metric",
        "best_checkpoint",
        "train_seconds",
    )
    out = {k: m.get(k) for k in keys}
    out["model"] = model
    out["steps"] = m.get("counts", {}).get("steps")
    out["epochs"] = m.get("counts", {}).get("epochs")
    return out


def _segments(
    histories: list[list[int]],
    targets: np.ndarray,
    freq: np.ndarray,
    items: pl.DataFrame,
    table: SidTable | None,
    emb: np.ndarray | None,
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Each computable segment's labels per user, and why the others were not computed."""
    seg = {
        "popularity": bc.popularity_segment(targets, freq),
        "history_length": bc.history_segment(histories),
        "repeat": bc.repeat_segment(histories, targets),
    }
    skipped = {}
    categories = items["categories"].to_list()
    if any(categories):
        seg["category"] = bc.category_segment(histories, targets, categories)
    elif emb is not None:
        seg["category"] = bc.similarity_segment(histories, targets, emb)
    else:
        skipped["category"] = "the items have no categories and no --embeddings were given"
    if emb is not None:
        seg["recency"] = bc.recency_segment(histories, targets, emb)
    else:
        skipped["recency"] = "needs --embeddings"
    if table is not None:
        seg["sid"] = bc.sid_segment(targets, table.codes)
    else:
        skipped["sid"] = "needs --sid (the evaluation read no SID directory)"
    return seg, skipped


def _recommended(
    top: np.ndarray, targets: np.ndarray, hit: np.ndarray, freq: np.ndarray, emb: np.ndarray | None
) -> dict[str, Any]:
    """Coverage, popularity, long tail and concentration of the top-K lists; how close a
    miss's best recommendation is to the target."""
    n_items = len(freq)
    head = np.zeros(n_items, dtype=bool)
    head[np.argsort(-freq, kind="stable")[: max(1, round(bc.HEAD_SHARE * n_items))]] = True
    counts = np.bincount(top.ravel(), minlength=n_items)
    out: dict[str, Any] = {
        "catalog_coverage": float((counts > 0).mean()),
        "distinct_items_recommended": int((counts > 0).sum()),
        "mean_popularity_recommended": float(freq[top].mean()),
        "mean_popularity_targets": float(freq[targets].mean()),
        "long_tail_share_recommended": float((~head[top]).mean()),
        "long_tail_share_targets": float((~head[targets]).mean()),
        "gini_of_recommendation_counts": bc.gini(counts),
    }
    if emb is not None:
        unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        miss = ~hit
        cos = np.einsum("nd,nd->n", unit[top[:, 0]], unit[targets])
        rng = np.random.default_rng(0)
        random = np.einsum("nd,nd->n", unit[rng.integers(0, n_items, len(targets))], unit[targets])
        out["miss_cosine_best_to_target"] = float(cos[miss].mean()) if miss.any() else None
        out["random_item_cosine_to_target"] = float(random.mean())
    return out


def _decoding(
    ranked: np.ndarray, ranks: np.ndarray, targets: np.ndarray, k: int, table: SidTable | None
) -> dict[str, Any]:
    """Where the target is in the full list, and, for misses, how deep the best beam's SID
    agrees with the target's."""
    beams = ranked.shape[1]
    miss = ~((ranks > 0) & (ranks <= k))
    where = {
        f"top {k}": int((~miss).sum()),
        f"ranks {k + 1}-{beams}": int((ranks > k).sum()),
        "not in the list": int((ranks == 0).sum()),
    }
    out: dict[str, Any] = {"list_length": beams, "target_position": where}
    if table is not None and miss.any():
        depth = bc.decoding_depth(ranked[miss, 0], targets[miss], table.codes)
        levels = max(len(c) for c in table.codes)
        names = ["wrong first code"] + [
            f"right {d} code{'s' if d > 1 else ''}, wrong code {chr(97 + d)}"
            for d in range(1, levels)
        ]
        if levels > 1:
            names[-1] = "right prefix, wrong last code"
        hist = np.bincount(np.minimum(depth, levels), minlength=levels + 1)
        out["misses_by_depth"] = {
            **{names[d]: int(hist[d]) for d in range(levels)},
            "same SID, another item": int(hist[levels]),
        }
    return out


def _examples(
    frame: pl.DataFrame, miss: np.ndarray, titles: list[str], k: int, seed: int
) -> list[dict[str, Any]]:
    """A seeded dozen of misses, with titles."""
    idx = np.flatnonzero(miss)
    pick = np.sort(np.random.default_rng(seed).choice(idx, min(EXAMPLES, len(idx)), replace=False))
    out = []
    for r in pick.tolist():
        row = frame.row(r, named=True)
        out.append(
            {
                "user_id": row["user_id"],
                "history": [{"item": i, "title": titles[i]} for i in row["history"]],
                "target": {"item": row["target"], "title": titles[row["target"]]},
                "target_rank": row["rank"],
                "recommended": [
                    {"item": i, "title": titles[i]} for i in row["ranked_items"][: min(k, 5)]
                ],
            }
        )
    return out


def analyze(
    eval_dir: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    sid: str | Path | None = None,
    embeddings: str | Path | None = None,
    top_k: int = 10,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the bad-case report of the evaluation in ``eval_dir`` into ``out``; returns the
    report."""
    eval_dir = Path(eval_dir)
    frame = _predictions(eval_dir)
    inputs = _evaluation_inputs(eval_dir)
    data, sid_dir = _inputs(
        eval_dir, inputs, Path(data) if data else None, Path(sid) if sid else None
    )
    ds, _ = read_dataset(data)
    n_items = ds.items.height
    ranked = np.array(frame["ranked_items"].to_list(), dtype=np.int64)
    if top_k < 1 or top_k > ranked.shape[1]:
        raise SidrecError(f"--top-k must be in 1..{ranked.shape[1]} (the list length), got {top_k}")
    targets = frame["target"].to_numpy()
    if targets.max() >= n_items or ranked.max() >= n_items:
        raise InputError(eval_dir / PREDICTIONS_FILE, f"names items beyond {data}'s {n_items}")
    table = read_sid_dir(sid_dir) if sid_dir is not None else None
    if table is not None and len(table.codes) != n_items:
        raise InputError(sid_dir, f"has {len(table.codes)} items, the dataset {n_items}")
    emb = None
    if embeddings is not None:
        emb = np.load(require_file(Path(embeddings) / "embeddings.npy", "embeddings file"))
        if emb.shape[0] != n_items:
            raise InputError(embeddings, f"has {emb.shape[0]} rows, the dataset {n_items} items")
    run = Run(
        "analyze",
        {"top_k": top_k, "seed": seed},
        {"eval": str(eval_dir), "data": str(data), "sid": str(sid_dir), "emb": str(embeddings)},
        seed,
    )
    histories = frame["history"].to_list()
    ranks = frame["rank"].fill_null(0).to_numpy()
    hit = (ranks > 0) & (ranks <= top_k)
    freq = training_frequency(ds)
    segments, skipped = _segments(histories, targets, freq, ds.items, table, emb)
    report = {
        "evaluation": str(eval_dir),
        "dataset": describe(data, "source", "dataset"),
        "titles": bool(ds.items["title"].str.strip_chars().str.len_chars().gt(0).any()),
        "training": _training(inputs),
        "users": frame.height,
        "top_k": top_k,
        "failures": int((~hit).sum()),
        "failure_rate": float((~hit).mean()),
        "metrics": hr_ndcg(ranks, [k for k in (1, 5, 10, 20) if k <= ranked.shape[1]]),
        "segments": {name: bc.segment_table(lab, ranks, top_k) for name, lab in segments.items()},
        "segments_not_computed": skipped,
        "decoding": _decoding(ranked, ranks, targets, top_k, table),
        "recommended": _recommended(ranked[:, :top_k], targets, hit, freq, emb),
        "sid_quality": sid_summary(table.codes, table.codebook_sizes) if table else None,
        "definitions": bc.DEFINITIONS,
        "examples": _examples(frame, ~hit, ds.items["title"].to_list(), top_k, seed),
    }
    with atomic_dir(out, overwrite) as tmp:
        with (tmp / "eval_results.jsonl").open("w", encoding="utf-8") as f:
            for r, row in enumerate(frame.select(NEEDED).iter_rows(named=True)):
                row["ranked_items"] = row["ranked_items"][:top_k]
                row["hit"] = bool(hit[r])
                row["segments"] = {name: lab[r] for name, lab in segments.items()}
                f.write(json.dumps(row) + "\n")
        write_json(tmp / REPORT_FILE, report)
        summary = format_summary(report)
        (tmp / "summary_report.txt").write_text(summary + "\n", encoding="utf-8")
        write_plots(report, ranks, ranked.shape[1], tmp / "visualizations")
        write_html(report, tmp / "visualizations", tmp / "report.html", summary)
        run.finish(tmp, {"users": frame.height, "failures": report["failures"]})
    return report


def format_summary(report: dict[str, Any]) -> str:
    """The report as text: headline figures, each segment's worst label, decoding, lists."""
    k = report["top_k"]
    lines = [
        f"{report['users']:,} users, {report['failures']:,} failures (target not in the top "
        f"{k}): failure rate {report['failure_rate']:.1%}",
        "metrics: " + ", ".join(f"{n} {v:.4f}" for n, v in report["metrics"].items()),
        "",
        "segments (label: users, share of failures, HR@K inside vs the rest):",
    ]
    for name, rows in report["segments"].items():
        lines.append(f"  {name}: {bc.DEFINITIONS[name]}")
        for row in rows:
            rest = row[f"HR@{k}_rest"]
            lines.append(
                f"    {row['label']:<20} {row['users']:>7,}  {row['share_of_failures']:>6.1%} "
                f"of failures  HR@{k} {row[f'HR@{k}']:.4f} vs "
                + ("-" if rest is None else f"{rest:.4f}")
            )
    for name, why in report["segments_not_computed"].items():
        lines.append(f"  {name}: not computed ({why})")
    dec = report["decoding"]
    lines += [
        "",
        "where the target is: "
        + ", ".join(f"{n} {v:,}" for n, v in dec["target_position"].items()),
    ]
    if "misses_by_depth" in dec:
        lines.append(
            "misses by how far the best beam follows the target's SID: "
            + ", ".join(f"{n} {v:,}" for n, v in dec["misses_by_depth"].items())
        )
    rec = report["recommended"]
    lines += [
        "",
        f"recommended: {rec['catalog_coverage']:.1%} of the catalog, Gini "
        f"{rec['gini_of_recommendation_counts']:.3f}, long-tail share "
        f"{rec['long_tail_share_recommended']:.1%} (targets {rec['long_tail_share_targets']:.1%}), "
        f"mean popularity {rec['mean_popularity_recommended']:.1f} "
        f"(targets {rec['mean_popularity_targets']:.1f})",
    ]
    if rec.get("miss_cosine_best_to_target") is not None:
        lines.append(
            f"a miss's best recommendation has cosine {rec['miss_cosine_best_to_target']:.3f} "
            f"to the target (a random item {rec['random_item_cosine_to_target']:.3f})"
        )
    return "\n".join(lines)
