"""How much a constrained decoding step costs: our prefix index against per-beam references.

For real catalogs (MiniOneRec's 3,686 Industrial SIDs, LETTER's 12,101 Beauty SIDs), beams 20
and 50, batch 8 and 32, it times the constraint alone on every decoding step (each beam at a
real SID prefix, scores over a SID-only vocabulary and over Qwen2.5's plus the SID tokens) for:

- ``ours``: :class:`sidrec.core.decoding.SidConstraint` (one vectorised pass per step);
- ``per_beam_dict``: MiniOneRec's way, a dict from the generated prefix (as a string) to its
  allowed tokens, looked up in a Python loop over every beam;
- ``hf_prefix_constrained``: transformers' ``PrefixConstrainedLogitsProcessor`` over the same
  dict.

All three must give the same mask. It also times the whole constrained search
(:func:`whole_search`, a tiny model and SmolLM2-135M's architecture): ours with the full and
the restricted head against ``generate`` with the per-beam dict processor and with
``prefix_allowed_tokens_fn``, with peak memory, ms per step and the constraint's share of a
step. Prints one JSON object.

    python benchmarks/decode_speed.py [--out FILE] [--repeats 5] [--models tiny smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PrefixConstrainedLogitsProcessor,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from sidrec.core.decoding import (
    Catalog,
    PrefixIndex,
    SidConstraint,
    StepHead,
    beam_config,
    beam_search,
    left_pad,
)
from sidrec.core.manifest import git_commit, machine, measured, print_report
from sidrec.core.sids import SidTable, read_index_json

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CATALOGS = {
    "industrial_3686": SHARED / "minionerec_amazon18/index/Industrial_and_Scientific.index.json",
    "beauty_12101": SHARED / "letter_amazon14/Beauty.index.json",
}
# Qwen2.5's tokenizer: 151,665 tokens, <|im_end|> = 151,645; SID tokens are appended after it
QWEN_VOCAB, QWEN_EOS = 151_665, 151_645
PROMPT = 64


class PerBeamDict:
    """MiniOneRec's constraint: a dict from the generated prefix to its allowed tokens and a
    Python loop over every beam (the reference, written as upstream does it)."""

    def __init__(self, allowed: dict[str, list[int]], prompt_length: int) -> None:
        self.allowed = allowed
        self.prompt_length = prompt_length

    def allowed_fn(self, batch_id: int, sent: torch.Tensor) -> list[int]:
        return self.allowed[str(sent[self.prompt_length :].tolist())]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.full_like(scores, float("-inf"))
        for row, sent in enumerate(input_ids):
            mask[row, self.allowed_fn(0, sent)] = 0
        return scores + mask


def prefix_dict(codes: list[tuple[int, ...]], ids: list[list[int]], eos: int) -> dict:
    """Every generated prefix (as a string of token ids) -> the tokens allowed after it."""
    allowed: dict[str, set[int]] = {}
    for c in codes:
        tokens = [ids[lv][x] for lv, x in enumerate(c)]
        for d in range(len(tokens)):
            allowed.setdefault(str(tokens[:d]), set()).add(tokens[d])
        allowed.setdefault(str(tokens), set()).add(eos)
    return {k: sorted(v) for k, v in allowed.items()}


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def token_layout(table: SidTable, vocab: str) -> tuple[list[list[int]], int, int, int]:
    """SID token ids per level, vocabulary size, end-of-sequence id and the first SID id, for
    Qwen2.5's vocabulary plus the SID tokens (``qwen2.5``) or three specials plus the SID
    tokens (``sid-only``, the Beauty model's)."""
    base, eos = (QWEN_VOCAB, QWEN_EOS) if vocab == "qwen2.5" else (3, 2)
    offsets = np.cumsum([0, *table.codebook_sizes])
    ids = [
        [base + int(offsets[lv]) + c for c in range(k)] for lv, k in enumerate(table.codebook_sizes)
    ]
    return ids, base + int(offsets[-1]), eos, base


def constraint_steps(
    table: SidTable, beams: int, batch: int, vocab_name: str, repeats: int
) -> dict[str, float]:
    """Seconds per full decode (all steps) spent on the constraint, per implementation."""
    catalog = Catalog.from_table(table)
    ids, vocab, eos, base = token_layout(table, vocab_name)
    index = PrefixIndex(catalog, ids, eos, vocab)
    allowed = prefix_dict(catalog.codes, ids, eos)
    rng = np.random.default_rng(0)
    rows = batch * beams
    picked = [catalog.codes[i] for i in rng.integers(len(catalog.codes), size=rows)]
    prompt = torch.randint(0, base, (rows, PROMPT))
    depth = max(len(c) for c in catalog.codes)
    totals = {"ours": 0.0, "per_beam_dict": 0.0, "hf_prefix_constrained": 0.0}
    ref = PerBeamDict(allowed, PROMPT)
    ours = SidConstraint(index, PROMPT)
    hf = PrefixConstrainedLogitsProcessor(lambda b, s: ref.allowed_fn(b, s), beams)
    for step in range(depth + 1):
        # each beam sits at a real prefix of a catalog SID (shorter SIDs end with eos)
        gen = [[ids[lv][x] for lv, x in enumerate(c)][:step] for c in picked]
        gen = [g if len(g) == step else [*g, eos][:step] for g in gen]
        live = [i for i, g in enumerate(gen) if eos not in g]
        seqs = torch.cat(
            [prompt[live], torch.tensor([gen[i] for i in live]).view(len(live), step)], 1
        )
        scores = torch.randn(len(live), vocab).log_softmax(-1)
        want = torch.isfinite(ref(seqs, scores.clone()))
        got = torch.isfinite(ours(seqs, scores.clone()))
        hf_got = torch.isfinite(hf(seqs, scores.clone()))
        assert torch.equal(got, want) and torch.equal(hf_got, want), f"masks differ at step {step}"
        for name, proc in (("ours", ours), ("per_beam_dict", ref), ("hf_prefix_constrained", hf)):
            # a fresh score buffer per call: our processor writes in place
            buffers = iter([scores.clone() for _ in range(repeats + 1)])
            totals[name] += _time(lambda p=proc, s=seqs, b=buffers: p(s, next(b)), repeats)
    return totals


MODELS = ("tiny", "smollm2-135m")
# Qwen2.5-0.5B's shape (its config.json), for the GPU check (benchmarks/gpu_check.py)
QWEN25_05B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
}


def random_model(
    name: str, vocab_size: int, eos: int, device: str | torch.device = "cpu"
) -> PreTrainedModel:
    """Random weights on a real architecture, on ``device``: ``tiny`` (Qwen2, hidden 128, 4
    layers), ``smollm2-135m`` (SmolLM2-135M's Llama shape: hidden 576, 30 layers, 9 heads, 3
    key-value heads, tied embeddings) or ``qwen2.5-0.5b`` (:data:`QWEN25_05B`), with
    ``vocab_size`` tokens."""
    torch.manual_seed(0)
    common = {"vocab_size": vocab_size, "eos_token_id": eos, "pad_token_id": 0}
    if name == "qwen2.5-0.5b":
        return Qwen2ForCausalLM(Qwen2Config(**QWEN25_05B, **common)).to(device).eval()
    if name == "tiny":
        cfg = Qwen2Config(
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            **common,
        )
        return Qwen2ForCausalLM(cfg).to(device).eval()
    cfg = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        **common,
    )
    return LlamaForCausalLM(cfg).to(device).eval()


def whole_search(
    table: SidTable,
    beams: int,
    batch: int,
    vocab: str,
    model_name: str,
    methods: list[str],
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Seconds (one timed run after a warm-up) and peak memory of the whole constrained
    search per method on ``device``, the share of our search spent in the constraint, and
    whether every method returned catalog SIDs only."""
    catalog = Catalog.from_table(table)
    ids, size, eos, base = token_layout(table, vocab)
    model = random_model(model_name, size, eos, device)
    index = PrefixIndex(catalog, ids, eos, size, device=model.device)
    allowed = prefix_dict(catalog.codes, ids, eos)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(base, size, PROMPT).tolist() for _ in range(batch)]
    batch_in = left_pad(prompts, 0, model.device)
    config = beam_config(beams, index.depth + 1, eos, 0)
    per_beam = PerBeamDict(allowed, PROMPT)

    def generate(**how: Any) -> torch.Tensor:
        with torch.inference_mode():
            out = model.generate(**batch_in, generation_config=config, **how)
        return index.sids_of(out.sequences[:, PROMPT:]).view(batch, beams)

    calls = {
        "ours_full": lambda: beam_search(model, index, prompts, beams, 0, "full")[0],
        "ours_restricted": lambda: beam_search(model, index, prompts, beams, 0, "restricted")[0],
        "generate_per_beam_dict": lambda: generate(logits_processor=[per_beam]),
        "generate_prefix_constrained": lambda: generate(
            prefix_allowed_tokens_fn=lambda b, sent: per_beam.allowed_fn(b, sent)
        ),
    }
    row: dict[str, Any] = {"seconds": {}, "peak_mb": {}}
    for name in methods:
        calls[name]()  # warm-up
        sids, cost = measured(calls[name])
        row["seconds"][name] = cost["seconds"]
        row["peak_mb"][name] = cost["added_mb"]
        if not bool((sids >= 0).all()):
            raise AssertionError(f"{name} returned a sequence that is not a catalog SID")
    # where our search's time goes: the prompt's prefill (the first model call), the later
    # model calls (one token per beam), and the constraint (masking, trie walk) among them
    spent = {"constraint": 0.0, "prefill": 0.0, "calls": 0}
    forward = StepHead.forward

    def timed(method: Callable, key: str) -> Callable:
        def run(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            out = method(*args, **kwargs)
            if key == "constraint":
                spent[key] += time.perf_counter() - start
            elif spent["calls"] == 0:
                spent["prefill"] += time.perf_counter() - start
            spent["calls"] += key == "model"
            return out

        return run

    index.restrict = timed(index.restrict, "constraint")  # type: ignore[method-assign]
    index.child = timed(index.child, "constraint")  # type: ignore[method-assign]
    StepHead.forward = timed(forward, "model")  # type: ignore[method-assign]
    try:
        for head in ("full", "restricted"):
            if f"ours_{head}" not in methods:
                continue
            spent.update(constraint=0.0, prefill=0.0, calls=0)
            start = time.perf_counter()
            beam_search(model, index, prompts, beams, 0, head)
            decoding = time.perf_counter() - start - spent["prefill"]
            steps = max(1, spent["calls"] - 1)
            row[f"ours_{head}_prefill_seconds"] = round(spent["prefill"], 4)
            row[f"ours_{head}_ms_per_step"] = round(decoding / steps * 1e3, 2)
            row[f"ours_{head}_constraint_share_of_steps"] = round(spent["constraint"] / decoding, 4)
    finally:
        StepHead.forward = forward  # type: ignore[method-assign]
    secs = row["seconds"]
    for ref in ("generate_per_beam_dict", "generate_prefix_constrained"):
        for ours in ("ours_full", "ours_restricted"):
            if ref in secs and ours in secs:
                row[f"speedup_{ours}_vs_{ref}"] = round(secs[ref] / secs[ours], 1)
    return row


METHODS = ["ours_full", "ours_restricted", "generate_per_beam_dict", "generate_prefix_constrained"]
# SmolLM2-135M on 2 CPU cores: generate prefills every beam (50 x 32 x 64 tokens through 30
# layers), so the references run at the smallest shape; ours runs at the largest as well
SMOLLM2_SHAPES = {(20, 8): METHODS, (50, 32): METHODS[:2]}


def run(
    repeats: int = 5, catalogs: dict[str, Path] = CATALOGS, models: Sequence[str] = MODELS
) -> dict:
    results = []
    for name, path in catalogs.items():
        table = read_index_json(path)
        for beams in (20, 50):
            for batch in (8, 32):
                row = {"catalog": name, "items": len(table.codes), "beams": beams, "batch": batch}
                for vocab in ("sid-only", "qwen2.5"):
                    t = constraint_steps(table, beams, batch, vocab, repeats)
                    cell: dict[str, Any] = {
                        "constraint_ms_per_decode": {k: round(v * 1e3, 3) for k, v in t.items()},
                        "speedup_vs_per_beam_dict": round(t["per_beam_dict"] / t["ours"], 1),
                        "speedup_vs_hf_prefix_constrained": round(
                            t["hf_prefix_constrained"] / t["ours"], 1
                        ),
                    }
                    if "tiny" in models:
                        cell["search_tiny"] = whole_search(
                            table, beams, batch, vocab, "tiny", METHODS
                        )
                    smol = SMOLLM2_SHAPES.get((beams, batch))
                    if "smollm2-135m" in models and smol and name == "beauty_12101":
                        cell["search_smollm2_135m"] = whole_search(
                            table, beams, batch, vocab, "smollm2-135m", smol
                        )
                    row[vocab] = cell
                results.append(row)
                print(json.dumps(row), file=sys.stderr)
    return {
        "benchmark": "decode_speed",
        "protocol": "constraint: time summed over all decoding steps of one batch (best of "
        f"{repeats}), every beam at a real SID prefix; vocabularies: sid-only (3 specials + "
        f"the SID tokens, the Beauty model's) and qwen2.5 ({QWEN_VOCAB} tokens + the SID "
        f"tokens); prompts of {PROMPT} tokens. search: the whole constrained beam search, one "
        "timed run after a warm-up, random weights on a real architecture (tiny: Qwen2 hidden "
        "128, 4 layers; smollm2_135m: SmolLM2-135M's Llama shape, 30 layers, at the shapes of "
        "SMOLLM2_SHAPES): ours with the full and the restricted head against transformers' "
        "generate (beam search, length penalty 0) with MiniOneRec's per-beam dict processor "
        "and with prefix_allowed_tokens_fn (PrefixConstrainedLogitsProcessor) over the same "
        "dict; peak_mb: memory above what was in use before (GPU allocated, or CPU resident "
        "set sampled every ms); ms_per_step: our search after the prompt's prefill, per model "
        "call; constraint_share_of_steps: the constraint's share of that time",
        "results": results,
        "machine": machine(),
        "sidrec_commit": git_commit(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--out", type=Path, help="also write the JSON here")
    a = p.parse_args(argv)
    result = run(a.repeats, models=a.models)
    print_report(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
