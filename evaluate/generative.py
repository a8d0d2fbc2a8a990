"""``sidrec evaluate``: top-K recommendations of a trained SID model by constrained beam search.

The model is queried exactly as it was trained (its ``prompting.json``). Rows are sorted by
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


def evaluate_model(
    model_dir: str | Path,
    data: str | Path,
    sid: str | Path | None,
    out: str | Path,
    cfg: dict[str, Any],
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate the model in ``model_dir`` on ``cfg["evaluate"]["split"]`` of ``data`` with the
    SIDs it was trained on (``sid``, when given, must hold the same); write ``results.json``,
    ``predictions.parquet``, the config and a manifest into ``out``. Returns the results (an
    empty dict on processes other than the main one)."""
    e = cfg["evaluate"]
    check_batch_size(e["batch_size"])
    if e["num_beams"] < 1 or e["auto_batch_seconds"] <= 0:
        raise SidrecError(
            f"evaluate.num_beams must be >= 1 and evaluate.auto_batch_seconds > 0, got "
            f"{e['num_beams']} and {e['auto_batch_seconds']}"
        )
    out = Path(out)
    state = PartialState(cpu=not torch.cuda.is_available())
    on_main(state, lambda: check_output(out, overwrite))
    ds, _ = read_dataset(data)
    table, sid_dir = model_sids(model_dir, sid)
    if len(table.codes) != ds.items.height:
        raise InputError(
            data, f"has {ds.items.height} items, the model's SIDs ({sid_dir}) {len(table.codes)}"
        )
    spec = PromptSpec.load(model_dir)
    bf16 = use_bf16(e["bf16"])
    head = cfg["decoding"]["head"]
    model, tok, index, _ = load_decoder(
        model_dir, table, state.device, head, e["dense_depth"], bf16
    )
    rows = query_rows(ds, e["split"], e["max_users"], cfg["seed"])
    sids = table.sids
    answer = index.depth + 1  # the longest SID and end-of-sequence
    encoded = [spec.encode(tok, [sids[i] for i in h], answer) for h in rows["history"].to_list()]
    prompts = [ids for ids, _ in encoded]
    truncated = sum(cut > 0 for _, cut in encoded)
    inputs = {"model": str(model_dir), "data": str(data), "sid": str(sid_dir)}
    run = Run("evaluate", cfg, inputs, None)
    k = e["num_beams"]
    histories = rows["history"].to_list()
    exclude = e["exclude_history"]
    # with the history left out, enough beams that num_beams new items remain
    beams = k + (max(map(len, histories), default=0) if exclude else 0)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
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
    seconds = time.perf_counter() - started
    if not state.is_main_process:
        return {}
    found.sort(key=lambda r: r[0])
    if [r[0] for r in found] != list(range(len(prompts))):
        raise SidrecError("the processes' shards did not cover every evaluation row once")
    top = np.array([r[1] for r in found], dtype=np.int64)
    scores = np.array([r[2] for r in found], dtype=np.float64)
    catalog = index.catalog
    items = catalog.representative[top]
    unfiltered = unfiltered_sids = None
    if exclude:
        unfiltered = items[:, :k]
        unfiltered_sids = [[sids[i] for i in row] for row in unfiltered.tolist()]
        items, scores = drop_history(items, scores, histories, k)
    ranked_sids = [[sids[i] if i >= 0 else "" for i in row] for row in items.tolist()]
    target_sids = [sids[t] for t in rows["target"].to_list()]
    shared = sum(len(its) > 1 for its in catalog.items)
    info = {
        "method": "sidrec",
        "model": str(model_dir),
        "split": e["split"],
        "num_beams": k,
        "beams_decoded": beams,
        "exclude_history": exclude,
        "batch_size": size,
        "batch_size_auto": e["batch_size"] == "auto",
        "head": head,
        "max_users": e["max_users"],
        "shared_sids": shared,
        "truncated_histories": truncated,
        "items_in_shared_sids": sum(len(its) for its in catalog.items if len(its) > 1),
        "seconds": round(seconds, 3),
        "users_per_second": round(len(prompts) / seconds, 2),
        **peak_memory(),
        "device": device_name(),
        "processes": state.num_processes,
        "bf16": bf16,
        "baselines": reference_metrics(ds, rows, k, exclude),
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
