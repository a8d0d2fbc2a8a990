"""``sidrec evaluate``: top-K recommendations of a trained SID model: by constrained beam
search for an LM, by exact scores over the catalog for a ``tree`` model.

An LM is queried exactly as it was trained (its ``prompting.json``). Rows are sorted by
prompt length and batched; under ``accelerate launch`` or ``torchrun`` each process decodes a
shard of the rows and the main process merges them and writes the results.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from sidrec.core.dataset import read_dataset
from sidrec.core.decoding import (
    Decoder,
    auto_batch_size,
    beam_search,
    check_batch_size,
    load_decoder,
)
from sidrec.core.errors import InputError, SidrecError
from sidrec.core.io import atomic_dir, check_output
from sidrec.core.ledger import describe
from sidrec.core.manifest import Run, peak_memory
from sidrec.core.metrics import drop_history
from sidrec.core.model_dir import model_sids
from sidrec.core.prompts import PromptSpec
from sidrec.core.ranking import device_name, record_experiment, write_ranking
from sidrec.core.references import reference_metrics
from sidrec.core.sequences import query_rows
from sidrec.core.training import on_main, use_bf16
from sidrec.core.tree_model import is_tree_model, load_tree, rank_tree

# users scored at once by a tree model when evaluate.batch_size is auto
TREE_BATCH = 256


def _check_settings(e: dict[str, Any]) -> None:
    """Refuse ``evaluate`` settings no search can run with."""
    check_batch_size(e["batch_size"])
    if e["num_beams"] < 1 or e["auto_batch_seconds"] <= 0:
        raise SidrecError(
            f"evaluate.num_beams must be >= 1 and evaluate.auto_batch_seconds > 0, got "
            f"{e['num_beams']} and {e['auto_batch_seconds']}"
        )


def _decode(
    decoder: Decoder, prompts: list[list[int]], beams: int, e: dict[str, Any], state: Any
) -> tuple[np.ndarray, np.ndarray, int | str]:
    """The top ``beams`` SIDs (int64 [N, beams]) and their scores (float64 [N, beams]) of
    every prompt, each process decoding a shard of them sorted by length; also the batch size
    used. Empty arrays on processes other than the main one."""
    model, tok, index, head = decoder
    with state.split_between_processes(list(range(len(prompts)))) as shard:
        shard = sorted(shard, key=lambda i: len(prompts[i]))
        size = e["batch_size"]
        if size == "auto":
            mine = [prompts[i] for i in shard]
            size = auto_batch_size(
                model, index, mine, beams, tok.pad_token_id, head, e["auto_batch_seconds"]
            )
        found: list[tuple[int, list[int], list[float]]] = []
        batches = range(0, len(shard), size)
        for b in tqdm(batches, desc="evaluate", disable=not state.is_main_process):
            part = shard[b : b + size]
            top, scores = beam_search(
                model, index, [prompts[i] for i in part], beams, tok.pad_token_id, head
            )
            found += zip(part, top.tolist(), scores.tolist(), strict=True)
    found = gather_object(found)
    if not state.is_main_process:
        return np.empty((0, beams), np.int64), np.empty((0, beams)), size
    found.sort(key=lambda r: r[0])
    if [r[0] for r in found] != list(range(len(prompts))):
        raise SidrecError("the processes' shards did not cover every evaluation row once")
    top = np.array([r[1] for r in found], dtype=np.int64)
    return top, np.array([r[2] for r in found], dtype=np.float64), size


def _prompts(
    spec: PromptSpec, decoder: Decoder, sids: list[str], histories: list[list[int]]
) -> tuple[list[list[int]], int]:
    """Each history as the model's prompt (token ids), shortened to leave room for the longest
    SID and end-of-sequence; and how many histories lost items to fit."""
    answer = decoder.index.depth + 1
    encoded = [spec.encode(decoder.tok, [sids[i] for i in h], answer) for h in histories]
    return [ids for ids, _ in encoded], sum(cut > 0 for _, cut in encoded)


def _ranked(
    items: np.ndarray, scores: np.ndarray, histories: list[list[int]], k: int, exclude: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The top ``k`` items [N, k] and scores of the decoded ``items`` [N, beams]; with
    ``exclude``, the history's items left out, and the unfiltered top ``k`` returned too."""
    if not exclude:
        return items, scores, None
    unfiltered = items[:, :k]
    items, scores = drop_history(items, scores, histories, k)
    return items, scores, unfiltered


def _settings(model_dir: str | Path, e: dict[str, Any], head: str) -> dict[str, Any]:
    """What an evaluation's results record of its settings."""
    return {
        "method": "sidrec",
        "model": str(model_dir),
        "split": e["split"],
        "num_beams": e["num_beams"],
        "exclude_history": e["exclude_history"],
        "batch_size_auto": e["batch_size"] == "auto",
        "head": head,
        "max_users": e["max_users"],
    }


def _lm_ranking(
    model_dir: Path, table: Any, rows: Any, cfg: dict[str, Any], state: Any
) -> tuple[Any, ...] | None:
    """Rank by constrained beam search: (items, scores, unfiltered items, info), or None on
    processes other than the main one."""
    e = cfg["evaluate"]
    spec = PromptSpec.load(model_dir)  # a broken prompting.json fails before the model loads
    bf16 = use_bf16(e["bf16"])
    head = cfg["decoding"]["head"]
    decoder = load_decoder(model_dir, table, state.device, head, e["dense_depth"], bf16)
    histories = rows["history"].to_list()
    prompts, truncated = _prompts(spec, decoder, table.sids, histories)
    k, exclude = e["num_beams"], e["exclude_history"]
    # with the history left out, enough beams that num_beams new items remain
    beams = k + (max(map(len, histories), default=0) if exclude else 0)
    started = time.perf_counter()
    top, scores, size = _decode(decoder, prompts, beams, e, state)
    seconds = time.perf_counter() - started
    if not state.is_main_process:
        return None
    catalog = decoder.index.catalog
    items, scores, unfiltered = _ranked(catalog.representative[top], scores, histories, k, exclude)
    info = {
        **_settings(model_dir, e, head),
        "beams_decoded": beams,
        "batch_size": size,
        "shared_sids": sum(len(its) > 1 for its in catalog.items),
        "truncated_histories": truncated,
        "items_in_shared_sids": sum(len(its) for its in catalog.items if len(its) > 1),
        "seconds": round(seconds, 3),
        "users_per_second": round(len(prompts) / seconds, 2),
        "bf16": bf16,
    }
    return items, scores, unfiltered, info


def _tree_ranking(
    model_dir: Path, table: Any, rows: Any, cfg: dict[str, Any], state: Any
) -> tuple[Any, ...] | None:
    """Rank by exact scores over the catalog (a ``tree`` model): (items, scores, unfiltered
    items, info), or None on processes other than the main one."""
    if not state.is_main_process:
        return None
    e = cfg["evaluate"]
    model = load_tree(model_dir, table, state.device)
    size = e["batch_size"] if isinstance(e["batch_size"], int) else TREE_BATCH
    histories = rows["history"].to_list()
    k, exclude = e["num_beams"], e["exclude_history"]
    started = time.perf_counter()
    items, scores, unfiltered = rank_tree(model, histories, k, size, exclude)
    seconds = time.perf_counter() - started
    shared = np.bincount(model.trie.sid_of_item)
    info = {
        **_settings(model_dir, e, "exact"),
        "family": "tree",
        "batch_size": size,
        "shared_sids": int((shared > 1).sum()),
        "items_in_shared_sids": int(shared[shared > 1].sum()),
        "truncated_histories": sum(len(h) > model.encoder.max_len for h in histories),
        "seconds": round(seconds, 3),
        "users_per_second": round(len(histories) / seconds, 2),
        "bf16": False,
    }
    return items, scores, unfiltered if exclude else None, info


def evaluate_model(
    model_dir: str | Path,
    data: str | Path,
    sid: str | Path | None,
    out: str | Path,
    cfg: dict[str, Any],
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate the model in ``model_dir`` (either family) on ``cfg["evaluate"]["split"]`` of
    ``data`` with the SIDs it was trained on (``sid``, when given, must hold the same); write
    ``results.json``, ``predictions.parquet``, the config and a manifest into ``out``. Returns
    the results (an empty dict on processes other than the main one)."""
    e = cfg["evaluate"]
    _check_settings(e)
    out, model_dir = Path(out), Path(model_dir)
    state = PartialState(cpu=not torch.cuda.is_available())
    on_main(state, lambda: check_output(out, overwrite))
    ds, _ = read_dataset(data)
    table, sid_dir = model_sids(model_dir, sid)
    if len(table.codes) != ds.items.height:
        raise InputError(
            data, f"has {ds.items.height} items, the model's SIDs ({sid_dir}) {len(table.codes)}"
        )
    rows = query_rows(ds, e["split"], e["max_users"], cfg["seed"])
    inputs = {"model": str(model_dir), "data": str(data), "sid": str(sid_dir)}
    run = Run("evaluate", cfg, inputs, None)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    rank = _tree_ranking if is_tree_model(model_dir) else _lm_ranking
    ranked = rank(model_dir, table, rows, cfg, state)
    if ranked is None:
        return {}
    items, scores, unfiltered, info = ranked
    sids = table.sids
    ranked_sids = [[sids[i] if i >= 0 else "" for i in row] for row in items.tolist()]
    target_sids = [sids[t] for t in rows["target"].to_list()]
    unfiltered_sids = None
    if unfiltered is not None:
        unfiltered_sids = [[sids[i] for i in row] for row in unfiltered.tolist()]
    info = {
        **info,
        **peak_memory(),
        "device": device_name(),
        "processes": state.num_processes,
        "baselines": reference_metrics(ds, rows, e["num_beams"], e["exclude_history"]),
    }
    with atomic_dir(out, overwrite) as tmp:
        results = write_ranking(
            tmp, rows, items, scores, info, ranked_sids, target_sids, unfiltered, unfiltered_sids
        )
        run.finish(tmp, {"users": rows.height}, results=results)
    record_experiment(
        cfg,
        out,
        results,
        describe(model_dir, "stage", "base_model"),
        Path(data),
        describe(sid_dir, "stage"),
    )
    return results
