"""``sidrec sid build|assign|report``: embeddings -> unique SIDs, new items, and quality."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from sidrec.core.config import plain
from sidrec.core.embeddings import load_embeddings
from sidrec.core.errors import InputError, SidrecError, require_file
from sidrec.core.io import atomic_dir, read_json
from sidrec.core.manifest import Run
from sidrec.core.quantizer import (
    CODEBOOKS_FILE,
    MODEL_FILE,
    FrozenQuantizer,
    Method,
    encode,
    latents,
    residual_before_last,
    save_model,
)
from sidrec.core.sids import (
    REPORT_FILE,
    SidTable,
    read_index_json,
    read_sid_dir,
    sid_summary,
    write_sid_dir,
)
from sidrec.rq.dedup import DedupRule, append_tokens, reassign_last_level
from sidrec.rq.neural import train_quantizer
from sidrec.rq.quantize import fit_residual, reconstruction_error
from sidrec.rq.report import format_report, plot_code_usage

TRAIN_LOG = "train_log.json"
USAGE_PNG = "code_usage.png"


def _enum(kind: type, value: str, key: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        raise SidrecError(f"{key} must be one of {choices}; got {value!r}") from None


def _sizes(codes: list[list[int]], levels: int, codebook_size: int) -> list[int]:
    """K per level, plus the de-duplication level's size where some SIDs have one."""
    extra = [c[levels] for c in codes if len(c) > levels]
    return [codebook_size] * levels + ([max(1 + max(extra), 2)] if extra else [])


def _write(
    tmp: Path, codes: list[list[int]], books: np.ndarray, method: str, report: dict[str, Any]
) -> dict[str, Any]:
    sizes = _sizes(codes, books.shape[0], books.shape[1])
    np.savez(tmp / CODEBOOKS_FILE, codebooks=books, method=method)
    full = write_sid_dir(tmp, SidTable(codes, sizes), report)
    plot_code_usage(codes, sizes, tmp / USAGE_PNG, f"{method}, {len(codes):,} items")
    return full


def build_sids(
    emb_dir: str | Path, out: str | Path, cfg: dict[str, Any], overwrite: bool = False
) -> dict[str, Any]:
    """Quantize the embeddings of ``emb_dir`` into unique SIDs in ``out`` with ``cfg``'s
    ``sid`` settings and seed."""
    s, seed = cfg["sid"], cfg["seed"]
    method = _enum(Method, s["method"], "sid.method")
    rule = _enum(DedupRule, s["dedup"], "sid.dedup")
    run = Run("sid.build", {**plain(s), "seed": seed}, inputs={"emb": str(emb_dir)}, seed=seed)
    x = load_embeddings(emb_dir)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        start = time.time()
        extra: dict[str, Any] = {}
        if method in (Method.RQKMEANS, Method.CONSTRAINED):
            z = x
            base, books = fit_residual(
                x,
                method,
                s["levels"],
                s["codebook_size"],
                seed,
                s["kmeans_iters"],
                s["constrained_slack"],
                s["constrained_max_items"],
            )
        else:
            model, log = train_quantizer(x, s, seed, log_path=tmp / TRAIN_LOG)
            save_model(model, tmp / MODEL_FILE)
            z = latents(model, x)
            books = model.codebooks.detach().numpy()
            balance = method is Method.RQVAE and s["sinkhorn_last_level"]
            base = encode(z, books, balance_last=balance)
            extra = {"final_train_loss": {k: log[-1][k] for k in ("recon", "quant")}}
        before = sid_summary(base.tolist(), [s["codebook_size"]] * s["levels"])
        if rule is DedupRule.REASSIGN:
            codes = reassign_last_level(base, residual_before_last(z, base, books), books[-1])
        else:
            codes = append_tokens(base.tolist())
        report = {
            "method": method.value,
            "levels": s["levels"],
            "codebook_size": s["codebook_size"],
            "dedup": rule.value,
            "collision_rate_before_dedup": before["collision_rate"],
            "shared_sids_before_dedup": before["shared_sids"],
            "items_with_extra_token": sum(len(c) > s["levels"] for c in codes),
            "reconstruction_error": reconstruction_error(z, base, books),
            **extra,
            "seconds": round(time.time() - start, 3),
        }
        full = _write(tmp, codes, books, method.value, report)
        run.finish(tmp, {"items": len(codes), "distinct_sids": full["distinct_sids"]})
    return full


def _write_extension(tmp: Path, sid: Path, new: np.ndarray, where: str | Path) -> dict[str, Any]:
    frozen = FrozenQuantizer(sid)
    existing = read_sid_dir(frozen.sid)
    base, residual = frozen.codes(new, where)
    added = reassign_last_level(base, residual, frozen.books[-1], fixed=existing.codes)
    return _write_appended(tmp, frozen, added)


def _write_appended(tmp: Path, frozen: FrozenQuantizer, added: list[list[int]]) -> dict[str, Any]:
    """The SID directory of ``frozen`` with the codes ``added`` after its own."""
    existing = read_sid_dir(frozen.sid)
    report = {
        **read_json(frozen.sid / REPORT_FILE),
        "assigned_items": len(added),
        "assigned_from": str(frozen.sid),
    }
    if frozen.model is not None:
        shutil.copy2(frozen.sid / MODEL_FILE, tmp / MODEL_FILE)
    return _write(tmp, [*existing.codes, *added], frozen.books, frozen.method, report)


def append_sids(sid: str | Path, added: list[list[int]], out: str | Path) -> dict[str, Any]:
    """Write into ``out`` the SIDs of ``sid`` followed by the codes ``added`` (SIDs handed
    out elsewhere, e.g. by the registry); refuses a SID the catalog already has."""
    frozen = FrozenQuantizer(sid)
    taken = {tuple(c) for c in read_sid_dir(frozen.sid).codes}
    for i, codes in enumerate(added):
        if tuple(codes) in taken:
            raise SidrecError(f"new item {i}: its SID {codes} is already in {sid}")
        taken.add(tuple(codes))
    with atomic_dir(out) as tmp:
        return _write_appended(tmp, frozen, added)


def extend_sids(
    sid: str | Path, new: np.ndarray, out: str | Path, where: str | Path, overwrite: bool = False
) -> dict[str, Any]:
    """Write into ``out`` the SIDs of ``sid`` followed by SIDs for new items (embeddings
    ``new`` [M, D], named ``where`` in errors), without changing an existing SID: new items are
    coded with the frozen quantizer and made unique against every existing SID by the
    ``reassign`` rule, falling back to an extra token where a prefix is full (existing SIDs
    cannot move, so ``append`` is not used). Returns the SID report."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        return _write_extension(tmp, require_file(sid, "SID directory"), new, where)


def assign_sids(
    sid: str | Path, emb_dir: str | Path, out: str | Path, overwrite: bool = False
) -> dict[str, Any]:
    """Give SIDs to the items a catalog gained (see :func:`extend_sids`).

    ``emb_dir`` embeds the whole grown catalog: rows 0..N-1 are the items ``sid`` already codes,
    rows N.. the new ones.
    """
    sid = require_file(sid, "SID directory")
    run = Run(
        "sid.assign",
        {"sid": str(sid), "emb": str(emb_dir)},
        inputs={"sid": str(sid), "emb": str(emb_dir)},
        seed=None,
    )
    n_old = len(read_sid_dir(sid).codes)
    x = load_embeddings(emb_dir)
    if x.shape[0] <= n_old:
        raise InputError(
            Path(emb_dir),
            f"has {x.shape[0]} rows; expected more than the "
            f"{n_old} items the SID directory already codes",
        )
    with atomic_dir(out, overwrite=overwrite) as tmp:
        full = _write_extension(tmp, sid, x[n_old:], Path(emb_dir))
        counts = {"items": full["items"], "new_items": full["assigned_items"]}
        run.finish(tmp, {**counts, "distinct_sids": full["distinct_sids"]})
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
        saved = Path(sid) / REPORT_FILE
        report = read_json(saved) if saved.exists() else {}
    else:
        table = read_index_json(index)
        report = {"method": f"external:{Path(index).name}"}
    report = {**report, **sid_summary(table.codes, table.codebook_sizes)}
    if png is not None:
        plot_code_usage(table.codes, table.codebook_sizes, Path(png), report.get("method", ""))
    return report, format_report(report)
