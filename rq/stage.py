"""``sidrec sid build`` and ``sidrec sid report``: embeddings -> unique SIDs, and their quality."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from sidrec.errors import SidrecError
from sidrec.io import atomic_dir, read_json
from sidrec.manifest import Run
from sidrec.rq.dedup import DedupRule, append_tokens, reassign_last_level
from sidrec.rq.embed import load_embeddings
from sidrec.rq.quantize import Method, fit_residual, reconstruction_error
from sidrec.rq.report import format_report, plot_code_usage
from sidrec.sids import SidTable, read_index_json, read_sid_dir, sid_summary, write_sid_dir

CODEBOOKS_FILE = "codebooks.npz"
USAGE_PNG = "code_usage.png"


def _enum(kind: type, value: str, key: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        raise SidrecError(f"{key} must be one of {choices}; got {value!r}") from None


def build_sids(
    emb_dir: str | Path, out: str | Path, cfg: dict[str, Any], seed: int, overwrite: bool = False
) -> dict[str, Any]:
    """Quantize the embeddings of ``emb_dir`` into unique SIDs in ``out`` (``cfg`` = ``sid``)."""
    method = _enum(Method, cfg["method"], "sid.method")
    rule = _enum(DedupRule, cfg["dedup"], "sid.dedup")
    run = Run("sid.build", {**cfg, "seed": seed}, inputs={"emb": str(emb_dir)}, seed=seed)
    x = load_embeddings(emb_dir)
    start = time.time()
    q = fit_residual(
        x,
        method,
        cfg["levels"],
        cfg["codebook_size"],
        seed,
        cfg["kmeans_iters"],
        cfg["constrained_slack"],
        cfg["constrained_max_items"],
    )
    before = sid_summary(q.codes.tolist(), [cfg["codebook_size"]] * cfg["levels"])
    if rule is DedupRule.REASSIGN:
        last = q.codebooks.shape[0] - 1
        residual = x - sum(q.codebooks[lv][q.codes[:, lv]] for lv in range(last))
        codes = reassign_last_level(q.codes, residual, q.codebooks[last])
    else:
        codes = append_tokens(q.codes.tolist())
    depth = max(len(c) for c in codes)
    sizes = [cfg["codebook_size"]] * cfg["levels"]
    if depth > cfg["levels"]:
        sizes.append(max(1 + max(c[-1] for c in codes if len(c) == depth), 2))
    report = {
        "method": method.value,
        "levels": cfg["levels"],
        "codebook_size": cfg["codebook_size"],
        "dedup": rule.value,
        "collision_rate_before_dedup": before["collision_rate"],
        "shared_sids_before_dedup": before["shared_sids"],
        "items_with_extra_token": sum(len(c) > cfg["levels"] for c in codes),
        "reconstruction_error": reconstruction_error(x, q.codes, q.codebooks),
        "seconds": round(time.time() - start, 3),
    }
    with atomic_dir(out, overwrite=overwrite) as tmp:
        np.savez(tmp / CODEBOOKS_FILE, codebooks=q.codebooks, method=method.value, dedup=rule.value)
        full = write_sid_dir(tmp, SidTable(codes, sizes), report)
        plot_code_usage(codes, sizes, tmp / USAGE_PNG, f"{method.value}, {len(codes):,} items")
        run.finish(tmp, {"items": len(codes), "distinct_sids": full["distinct_sids"]})
    return full


def report_sids(
    sid: str | Path | None = None, index: str | Path | None = None, png: str | Path | None = None
) -> tuple[dict[str, Any], str]:
    """Score a SID directory or an external ``index.json`` (e.g. MiniOneRec's); returns the
    report and its table. ``png`` also draws the code usage per level."""
    if (sid is None) == (index is None):
        raise SidrecError("give exactly one of --sid DIR or --index FILE")
    if sid is not None:
        table = read_sid_dir(sid)
        saved = Path(sid) / "report.json"
        report = read_json(saved) if saved.exists() else {}
    else:
        table = read_index_json(index)
        report = {"method": f"external:{Path(index).name}"}
    report = {**report, **sid_summary(table.codes, table.codebook_sizes)}
    if png is not None:
        plot_code_usage(table.codes, table.codebook_sizes, Path(png), report.get("method", ""))
    return report, format_report(report)
