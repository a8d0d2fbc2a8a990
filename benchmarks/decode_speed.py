"""How much a constrained decoding step costs: our prefix index against per-beam references.

For real catalogs (MiniOneRec's 3,686 Industrial SIDs, LETTER's 12,101 Beauty SIDs), beams 20
and 50, batch 8 and 32, it times the constraint alone on every decoding step (each beam at a
real SID prefix, scores over a SID-only vocabulary and over Qwen2.5's plus the SID tokens) for:

- ``ours``: :class:`sidrec.decoding.SidConstraint` (one vectorised pass per step);
- ``per_beam_dict``: MiniOneRec's way, a dict from the generated prefix (as a string) to its
  allowed tokens, looked up in a Python loop over every beam;
- ``hf_prefix_constrained``: transformers' ``PrefixConstrainedLogitsProcessor`` over the same
  dict.

All three must give the same mask. It also times a whole constrained search with a tiny model:
:func:`sidrec.decoding.beam_search` (one prefill per prompt) against ``generate`` with our
processor (transformers' beam search), and reports the share of our search spent in the
constraint. Prints one JSON object.

    python benchmarks/decode_speed.py [--out FILE] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import PrefixConstrainedLogitsProcessor, Qwen2Config, Qwen2ForCausalLM

from sidrec.decoding import (
    Catalog,
    PrefixIndex,
    SidConstraint,
    beam_config,
    beam_search,
    left_pad,
)
from sidrec.manifest import git_commit, machine, print_report
from sidrec.sids import SidTable, read_index_json

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


def end_to_end(table: SidTable, beams: int, batch: int, vocab: str, repeats: int) -> dict:
    """Seconds of our constrained beam search with a tiny model, of ``generate`` with the
    same constraint as a logits processor, and the constraint's share of our search."""
    catalog = Catalog.from_table(table)
    offsets = np.cumsum([0, *table.codebook_sizes])
    base = QWEN_VOCAB if vocab == "qwen2.5" else 3
    eos = QWEN_EOS if vocab == "qwen2.5" else 2
    ids = [
        [base + int(offsets[lv]) + c for c in range(k)] for lv, k in enumerate(table.codebook_sizes)
    ]
    size = base + int(offsets[-1])
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=size,
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            eos_token_id=eos,
            pad_token_id=0,
        )
    ).eval()
    index = PrefixIndex(catalog, ids, eos, size)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(base, size, PROMPT).tolist() for _ in range(batch)]
    spent = [0.0]

    def timed(method: Callable) -> Callable:
        def run(*args: object) -> torch.Tensor:
            start = time.perf_counter()
            out = method(*args)
            spent[0] += time.perf_counter() - start
            return out

        return run

    # the constraint's work in our search: masking each step's scores and walking the trie
    index.restrict = timed(index.restrict)  # type: ignore[method-assign]
    index.child = timed(index.child)  # type: ignore[method-assign]
    seconds = _time(lambda: beam_search(model, index, prompts, beams, 0), repeats)
    spent[0] = 0.0
    start = time.perf_counter()
    beam_search(model, index, prompts, beams, 0)
    total = time.perf_counter() - start
    batch_in = left_pad(prompts, 0, model.device)
    config = beam_config(beams, index.depth + 1, eos, 0)
    processor = [SidConstraint(index, PROMPT)]
    hf = _time(
        lambda: model.generate(**batch_in, generation_config=config, logits_processor=processor),
        repeats,
    )
    return {
        "search_seconds": seconds,
        "hf_generate_seconds": hf,
        "constraint_share": spent[0] / total,
    }


def run(repeats: int = 5, catalogs: dict[str, Path] = CATALOGS) -> dict:
    results = []
    for name, path in catalogs.items():
        table = read_index_json(path)
        for beams in (20, 50):
            for batch in (8, 32):
                row = {"catalog": name, "items": len(table.codes), "beams": beams, "batch": batch}
                for vocab in ("sid-only", "qwen2.5"):
                    t = constraint_steps(table, beams, batch, vocab, repeats)
                    e2e = end_to_end(table, beams, batch, vocab, max(1, repeats // 2))
                    row[vocab] = {
                        "constraint_ms_per_decode": {k: round(v * 1e3, 3) for k, v in t.items()},
                        "speedup_vs_per_beam_dict": round(t["per_beam_dict"] / t["ours"], 1),
                        "speedup_vs_hf_prefix_constrained": round(
                            t["hf_prefix_constrained"] / t["ours"], 1
                        ),
                        "beam_search_tiny_seconds": round(e2e["search_seconds"], 4),
                        "hf_generate_tiny_seconds": round(e2e["hf_generate_seconds"], 4),
                        "speedup_vs_hf_generate": round(
                            e2e["hf_generate_seconds"] / e2e["search_seconds"], 1
                        ),
                        "constraint_share_of_beam_search": round(e2e["constraint_share"], 4),
                    }
                results.append(row)
                print(json.dumps(row), file=sys.stderr)
    return {
        "benchmark": "decode_speed",
        "protocol": "constraint time summed over all decoding steps of one batch (best of "
        f"{repeats}), every beam at a real SID prefix; vocabularies: sid-only (3 specials + "
        f"the SID tokens, the Beauty model's) and qwen2.5 ({QWEN_VOCAB} tokens + the SID "
        f"tokens); prompts of {PROMPT} tokens; share of generate: tiny Qwen2 (hidden 128, 4 "
        "layers, random weights), time inside our constraint (masking, trie walk) / our whole beam "
        "search; hf generate: the same search by transformers with our logits processor",
        "results": results,
        "machine": machine(),
        "sidrec_commit": git_commit(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, help="also write the JSON here")
    a = p.parse_args(argv)
    result = run(a.repeats)
    print_report(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
