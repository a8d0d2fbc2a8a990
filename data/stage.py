"""The data stage's entry points: each reads its inputs and writes one dataset directory
(and, for sources that ship SIDs, optionally one SID directory). The CLI and the pipeline
call these; tests call them directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from sidrec.core.dataset import Dataset, read_dataset, write_dataset
from sidrec.core.errors import SidrecError
from sidrec.core.io import atomic_dir
from sidrec.core.manifest import Run
from sidrec.core.sids import SidTable, read_index_json, read_sid_dir, write_sid_dir
from sidrec.data.amazon18 import load_amazon18
from sidrec.data.interactions import load_interactions
from sidrec.data.letter import import_letter
from sidrec.data.minionerec import export_minionerec, import_minionerec
from sidrec.data.splits import SplitProtocol, assemble
from sidrec.data.synth import generate

SOURCES = ("synth", "amazon18", "minionerec", "letter", "interactions")


def _split_manifest(protocol: str, max_history: int) -> dict[str, Any]:
    return {"split": {"protocol": protocol, "max_history": max_history}}


def synth(
    out: str | Path,
    n_items: int,
    n_users: int,
    seed: int,
    split: str = "loo",
    max_history: int = 20,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate the demo dataset into ``out``; returns its manifest."""
    config = {
        "n_items": n_items,
        "n_users": n_users,
        "seed": seed,
        "split": split,
        "max_history": max_history,
    }
    run = Run("data.synth", config, inputs={}, seed=seed)
    items, sequences = generate(n_items, n_users, seed)
    ds, skipped = assemble(items, sequences, split, max_history)
    return write_dataset(
        out,
        ds,
        run,
        overwrite,
        source="synth",
        dataset="synth",
        **_split_manifest(split, max_history),
        skipped=skipped,
    )


def _split_and_write(
    out: str | Path,
    run: Run,
    overwrite: bool,
    items: pl.DataFrame,
    sequences: pl.DataFrame,
    extra: dict[str, Any],
    split: str,
    max_history: int,
    source: str,
    dataset: str,
) -> dict[str, Any]:
    """Split an importer's items and sequences, add the split's skips to ``extra`` and write
    the dataset directory; returns the manifest."""
    ds, skipped = assemble(items, sequences, split, max_history)
    extra["skipped"].update(skipped)
    return write_dataset(
        out,
        ds,
        run,
        overwrite,
        source=source,
        dataset=dataset,
        **_split_manifest(split, max_history),
        **extra,
    )


def amazon18(
    out: str | Path,
    raw_dir: str | Path,
    dataset: str,
    split: str = "temporal",
    max_history: int = 10,
    download: bool = False,
    overwrite: bool = False,
    **filters: Any,
) -> dict[str, Any]:
    """Build a dataset from Amazon Reviews 2018 raw files (``filters``: user_k, item_k,
    st_year, st_month, ed_year, ed_month, max_title_words)."""
    config = {
        "raw_dir": str(raw_dir),
        "dataset": dataset,
        "split": split,
        "max_history": max_history,
        "download": download,
        **filters,
    }
    run = Run("data.amazon18", config, inputs={"raw_dir": str(raw_dir)}, seed=None)
    items, sequences, extra = load_amazon18(raw_dir, dataset, download_missing=download, **filters)
    return _split_and_write(
        out, run, overwrite, items, sequences, extra, split, max_history, "amazon18", dataset
    )


def import_interactions(
    out: str | Path,
    interactions: str | Path,
    items: str | Path,
    split: str = "temporal",
    max_history: int = 10,
    window: list[int] | None = None,
    overwrite: bool = False,
    **columns_and_filters: Any,
) -> dict[str, Any]:
    """Build a dataset from your own interactions and items files (``columns_and_filters``:
    the ``*_col`` names, user_k, item_k; ``window``: [st_year, st_month, ed_year, ed_month])."""
    if window is not None and (len(window) != 4 or not all(isinstance(v, int) for v in window)):
        raise SidrecError(
            f"the window must be 4 integers (st_year st_month ed_year ed_month), got {window}"
        )
    config = {
        "interactions": str(interactions),
        "items": str(items),
        "split": split,
        "max_history": max_history,
        "window": window,
        **columns_and_filters,
    }
    inputs = {"interactions": str(interactions), "items": str(items)}
    run = Run("data.interactions", config, inputs=inputs, seed=None)
    items_frame, sequences, extra = load_interactions(
        interactions, items, window=tuple(window) if window else None, **columns_and_filters
    )
    name = Path(interactions).name.split(".")[0]
    return _split_and_write(
        out, run, overwrite, items_frame, sequences, extra, split, max_history, "interactions", name
    )


def write_imported_sids(
    out: str | Path, table: SidTable, source: str, inputs: dict[str, str], overwrite: bool = False
) -> dict[str, Any]:
    """Write SIDs shipped with a dataset as a SID directory (they may be non-unique)."""
    run = Run("sid.import", {"source": source}, inputs=inputs, seed=None)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        report = write_sid_dir(tmp, table, {"method": f"imported:{source}"})
        run.finish(tmp, {"items": len(table.codes), "distinct_sids": report["distinct_sids"]})
    return report


def _given_split(ds: Dataset, max_history: int, where: Path) -> Dataset:
    """MiniOneRec's own temporal split with histories cut to their last ``max_history`` items
    (a longer limit than the files hold cannot be honoured)."""
    longest = max(
        max(df["history"].list.len().max() or 0 for df in (ds.train, ds.valid, ds.test)), 1
    )
    if max_history > longest:
        raise SidrecError(
            f"{where}: MiniOneRec's split files hold histories of at most {longest} items, so "
            f"data.max_history={max_history} cannot be honoured with data.split=temporal (their "
            f"split); set data.max_history <= {longest}, or data.split=loo to split the rebuilt "
            "sequences anew"
        )
    cut = [
        df.with_columns(pl.col("history").list.tail(max_history))
        for df in (ds.train, ds.valid, ds.test)
    ]
    return Dataset(ds.items, ds.sequences, *cut)


def import_minionerec_dir(
    out: str | Path,
    src: str | Path,
    dataset: str,
    sid_out: str | Path | None = None,
    split: str = "temporal",
    max_history: int = 10,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Import MiniOneRec's processed files (and, with ``sid_out``, its SIDs). ``temporal``
    keeps MiniOneRec's own split (histories cut to ``max_history``); ``loo`` splits the users'
    rebuilt sequences leave-one-out."""
    config = {
        "src": str(src),
        "dataset": dataset,
        "sid_out": str(sid_out) if sid_out else None,
        "split": split,
        "max_history": max_history,
    }
    run = Run("data.import-minionerec", config, inputs={"src": str(src)}, seed=None)
    ds, extra, sids = import_minionerec(src, dataset)
    if split == SplitProtocol.TEMPORAL.value:
        ds = _given_split(ds, max_history, Path(src))
        protocol = {"protocol": split, "max_history": max_history, "given": True}
    else:
        ds, skipped = assemble(ds.items, ds.sequences, split, max_history)
        protocol = {"protocol": split, "max_history": max_history, "given": False}
        extra["skipped"] = skipped
    manifest = write_dataset(
        out,
        ds,
        run,
        overwrite,
        source="minionerec",
        dataset=dataset,
        split=protocol,
        **extra,
    )
    if sid_out is not None and sids is not None:
        write_imported_sids(sid_out, sids, "minionerec", {"src": str(src)}, overwrite)
    return manifest


def import_letter_dir(
    out: str | Path,
    src: str | Path,
    dataset: str,
    titles: str | Path | None = None,
    asins: str | Path | None = None,
    max_history: int = 20,
    sid_out: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Import LETTER/LC-Rec files with the leave-one-out protocol (and, with ``sid_out``,
    the shipped SIDs)."""
    config = {
        "src": str(src),
        "dataset": dataset,
        "titles": str(titles) if titles else None,
        "asins": str(asins) if asins else None,
        "max_history": max_history,
        "sid_out": str(sid_out) if sid_out else None,
    }
    inputs = {k: str(v) for k, v in (("src", src), ("titles", titles), ("asins", asins)) if v}
    run = Run("data.import-letter", config, inputs=inputs, seed=None)
    items, sequences, extra, sids = import_letter(src, dataset, titles, asins)
    ds, skipped = assemble(items, sequences, "loo", max_history)
    manifest = write_dataset(
        out,
        ds,
        run,
        overwrite,
        source="letter",
        dataset=dataset,
        **_split_manifest("loo", max_history),
        skipped=skipped,
        **extra,
    )
    if sid_out is not None and sids is not None:
        write_imported_sids(sid_out, sids, "letter", inputs, overwrite)
    return manifest


def export_minionerec_dir(
    data: str | Path, sid: str | Path, out: str | Path, overwrite: bool = False
) -> dict[str, Any]:
    """Write a dataset and its SIDs in MiniOneRec's layout, for MiniOneRec's own tools."""
    run = Run(
        "data.export-minionerec",
        {"data": str(data), "sid": str(sid)},
        inputs={"data": str(data), "sid": str(sid)},
        seed=None,
    )
    ds, manifest = read_dataset(data)
    name = manifest.get("dataset", "dataset")
    stem = manifest.get("minionerec_stem") or name
    table = read_sid_dir(sid)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        rows = export_minionerec(ds, table, name, stem, tmp)
        return run.finish(tmp, rows, dataset=name, stem=stem)


def build_from_config(
    cfg: dict[str, Any], out: str | Path, overwrite: bool = False
) -> dict[str, Any]:
    """Build the dataset a resolved config describes (``data.source`` picks the section)."""
    d = cfg["data"]
    source = d["source"]
    if source not in SOURCES:
        raise SidrecError(f"data.source must be one of {SOURCES}, got {source!r}")
    params = dict(d[source]) if source in d else {}
    for key in ("src", "raw_dir"):
        if key in params and params[key] is None:
            raise SidrecError(f"data.{source}.{key} must be set for data.source={source}")
    if source == "synth":
        return synth(
            out,
            seed=cfg["seed"],
            split=d["split"],
            max_history=d["max_history"],
            overwrite=overwrite,
            **params,
        )
    if source == "amazon18":
        return amazon18(
            out, split=d["split"], max_history=d["max_history"], overwrite=overwrite, **params
        )
    if source == "interactions":
        for key in ("interactions", "items"):
            if params[key] is None:
                raise SidrecError(
                    f"data.interactions.{key} must be set for data.source=interactions"
                )
        return import_interactions(
            out, split=d["split"], max_history=d["max_history"], overwrite=overwrite, **params
        )
    if source == "minionerec":
        return import_minionerec_dir(
            out, split=d["split"], max_history=d["max_history"], overwrite=overwrite, **params
        )
    if d["split"] != SplitProtocol.LOO.value:
        raise SidrecError(
            f"data.split={d['split']} is not possible for data.source=letter: LETTER's files "
            "have no timestamps, and its protocol is leave-one-out (data.split=loo)"
        )
    return import_letter_dir(out, max_history=d["max_history"], overwrite=overwrite, **params)


def import_sids_from_config(
    cfg: dict[str, Any], out: str | Path, overwrite: bool = False
) -> dict[str, Any]:
    """``sid.method=imported``: the SIDs shipped with a LETTER or MiniOneRec source, as a SID
    directory (kept as shipped, shared SIDs included)."""
    d = cfg["data"]
    source, params = d["source"], d.get(d["source"]) or {}
    if source == "letter":
        index = Path(params["src"]) / f"{params['dataset']}.index.json"
    elif source == "minionerec":
        index = Path(params["src"]) / "index" / f"{params['dataset']}.index.json"
    else:
        raise SidrecError(
            f"sid.method=imported needs a source that ships SIDs (letter, minionerec), "
            f"not data.source={source}"
        )
    table = read_index_json(index)
    return write_imported_sids(out, table, source, {"index": str(index)}, overwrite)
