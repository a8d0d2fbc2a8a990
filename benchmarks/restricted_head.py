"""When is ``decoding.head=restricted`` safe? The same model evaluated with both heads.

For a trained model directory and its dataset it runs ``sidrec evaluate`` twice on the same
users, with ``decoding.head=full`` and ``restricted``, and reports:

- the share of users whose top-10 is identical (same items, same order) and the same as a
  set, and the share whose whole top-K list is identical;
- HR@K / NDCG@K of both and their differences;
- the seconds and users/s of both (the ratio is the restricted head's speed-up);
- ``mass``: on up to 500 of the users, teacher-forced on their target's SID, the mean share of
  the full head's probability at each SID position that falls on the tokens the restricted
  head keeps (every SID token and end-of-sequence), and on that level's codes and
  end-of-sequence alone: when the first is close to 1 the two heads rank alike.

Prints one JSON object.

    python benchmarks/restricted_head.py --model outputs/demo/sft --data outputs/demo/data \\
        [--max-users 0] [--out FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from sidrec.core.config import load_config
from sidrec.core.dataset import read_dataset
from sidrec.core.decoding import PrefixIndex
from sidrec.core.manifest import git_commit, machine, print_report
from sidrec.core.model_dir import load_sid_model, model_sids
from sidrec.core.prompts import PromptSpec
from sidrec.core.sequences import query_rows
from sidrec.core.sids import sid_tokens
from sidrec.evaluate.generative import evaluate_model

MASS_USERS = 500
TOP = 10


@torch.inference_mode()
def step_mass(model_dir: Path, data: Path, cfg: dict[str, Any]) -> dict[str, list[float]]:
    """Per SID position, the mean share of the full head's probability on the SID tokens and
    end-of-sequence, and on that step's columns, teacher-forced on the targets of up to
    :data:`MASS_USERS` evaluated users."""
    ds, _ = read_dataset(data)
    table, _ = model_sids(model_dir)
    spec = PromptSpec.load(model_dir)
    model, tok = load_sid_model(model_dir, "cpu", False)
    index = PrefixIndex.for_tokenizer(table, tok, model.config.vocab_size)
    rows = query_rows(ds, cfg["evaluate"]["split"], MASS_USERS, cfg["seed"])
    sids = table.sids
    shares: dict[str, list[list[float]]] = {
        "sid_tokens": [[] for _ in range(index.depth)],
        "step_columns": [[] for _ in range(index.depth)],
    }
    for history, target in zip(rows["history"].to_list(), rows["target"].to_list(), strict=True):
        prompt = spec.encode(tok, [sids[i] for i in history], index.depth + 1)[0]
        answer = tok.convert_tokens_to_ids(sid_tokens(table.codes[target]))
        logits = model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1 : -1]
        probs = logits.float().softmax(-1)
        for j in range(len(answer)):
            shares["sid_tokens"][j].append(float(probs[j, index.sid_vocab].sum()))
            shares["step_columns"][j].append(float(probs[j, index.columns(j)].sum()))
    return {k: [round(float(np.mean(s)), 6) for s in v if s] for k, v in shares.items()}


def run(model_dir: Path, data: Path, overrides: list[str]) -> dict[str, Any]:
    cfg = load_config(None, ["swanlab.mode=disabled", *overrides])
    found: dict[str, dict[str, Any]] = {}
    ranked: dict[str, list[list[int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for head in ("full", "restricted"):
            run_cfg = {**cfg, "decoding": {**cfg["decoding"], "head": head}}
            out = Path(tmp) / head
            found[head] = evaluate_model(model_dir, data, None, out, run_cfg)
            ranked[head] = pl.read_parquet(out / "predictions.parquet")["ranked_items"].to_list()
    full, restricted = ranked["full"], ranked["restricted"]
    users = len(full)
    same_top = sum(a[:TOP] == b[:TOP] for a, b in zip(full, restricted, strict=True))
    same_set = sum(set(a[:TOP]) == set(b[:TOP]) for a, b in zip(full, restricted, strict=True))
    same_all = sum(a == b for a, b in zip(full, restricted, strict=True))
    metrics = {head: {m: round(v, 5) for m, v in r["metrics"].items()} for head, r in found.items()}
    return {
        "benchmark": "restricted_head",
        "model": str(model_dir),
        "data": str(data),
        "overrides": overrides,
        "users": users,
        "num_beams": found["full"]["num_beams"],
        "same_top10_order": round(same_top / users, 5),
        "same_top10_set": round(same_set / users, 5),
        "same_all_beams": round(same_all / users, 5),
        "metrics": metrics,
        "difference_restricted_minus_full": {
            m: round(found["restricted"]["metrics"][m] - found["full"]["metrics"][m], 5)
            for m in found["full"]["metrics"]
        },
        "seconds": {h: r["seconds"] for h, r in found.items()},
        "users_per_second": {h: r["users_per_second"] for h, r in found.items()},
        "speedup_restricted": round(found["full"]["seconds"] / found["restricted"]["seconds"], 2),
        "mass": step_mass(model_dir, data, cfg),
        "machine": machine(),
        "sidrec_commit": git_commit(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="an sft (or rl) output")
    p.add_argument("--data", type=Path, required=True, help="its dataset directory")
    p.add_argument("--max-users", type=int, default=0, help="0 = every test user")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    a = p.parse_args(argv)
    overrides = [f"evaluate.max_users={a.max_users}", *a.overrides]
    print_report(run(a.model, a.data, overrides), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
