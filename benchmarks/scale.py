"""How cost grows with the catalog: SIDs, prefix index, constraint step and new items at 10k,
100k and 1M items.

Synthetic 384-d item embeddings with cluster structure (a two-level mixture: 64 topics of 32
subtopics each, items scattered around their subtopic along 48 shared directions, as far as
subtopics from their topic, unit norm), built by ``sidrec sid
build`` (3 levels of 256 codes, ``reassign`` de-duplication) with

- ``rqkmeans``: faiss k-means at every level;
- ``rqkmeans-constrained``: balanced clusters, by the exact min-cost flow up to
  ``sid.constrained_max_items`` (50k) items and by Sinkhorn-balanced k-means past it.

Per size and method it reports the build's seconds and peak memory, the prefix index's build
seconds and peak memory (Qwen2.5's vocabulary plus the SID tokens), the constraint's
milliseconds per decoding step at 50 beams x 32 users (every beam at a real SID prefix: the
mask of the step's columns and the trie walk, as :func:`sidrec.core.decoding.beam_search` does
them), ``sid assign`` for 1,000 new items, and the tree family's exact scoring of every SID
for 32 users (:func:`exact_scoring`). Memory is the process's resident set sampled
every millisecond. Prints one JSON object, with the constraint step at the largest size over
its cost at the smallest.

    python benchmarks/scale.py [--sizes 10000 100000 1000000] [--methods rqkmeans ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sidrec.core.config import load_config
from sidrec.core.decoding import Catalog, PrefixIndex
from sidrec.core.embeddings import EMBEDDINGS_FILE
from sidrec.core.manifest import git_commit, machine, measured, print_report
from sidrec.core.sids import SidTable, read_sid_dir
from sidrec.core.tree_model import TreeSID, Trie
from sidrec.rq.stage import assign_sids, build_sids

SIZES = (10_000, 100_000, 1_000_000)
METHODS = ("rqkmeans", "rqkmeans-constrained")
DIM, TOPICS, SUBTOPICS, ITEM_DIRECTIONS = 384, 64, 32, 48
BEAMS, USERS, NEW_ITEMS = 50, 32, 1000
QWEN_VOCAB, QWEN_EOS = 151_665, 151_645
# the tree family's network as configs/beauty.yaml trains it
TREE_SHAPE = {
    "hidden": 64,
    "layers": 2,
    "heads": 2,
    "dropout": 0.5,
    "position": "rope",
    "max_len": 50,
    "node_embeddings": True,
}


def embeddings(n: int, seed: int = 0) -> np.ndarray:
    """``n`` unit-norm float32 [n, 384] rows around 64 x 32 nested cluster centres, each item
    as far from its subtopic (along 48 shared directions) as subtopics are from their topic: a
    text encoder's neighbours are similar, not identical."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(TOPICS, DIM)).astype(np.float32)
    subtopics = topics.repeat(SUBTOPICS, 0) + 0.6 * rng.normal(size=(TOPICS * SUBTOPICS, DIM))
    # items vary along a few shared directions, as text embeddings do
    basis = rng.normal(size=(ITEM_DIRECTIONS, DIM)).astype(np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        centre = subtopics[rng.integers(len(subtopics), size=m)]
        spread = rng.normal(size=(m, ITEM_DIRECTIONS)).astype(np.float32) @ basis
        out[start : start + m] = centre + 0.6 * spread
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def constraint_ms_per_step(index: PrefixIndex, repeats: int = 5) -> float:
    """Milliseconds of the constraint per decoding step, averaged over the steps: each of
    :data:`BEAMS` x :data:`USERS` beams at a real prefix of a random catalog SID, its node
    found and its step's columns masked (best of ``repeats``)."""
    rng = np.random.default_rng(1)
    codes = index.catalog.codes
    picked = [codes[i] for i in rng.integers(len(codes), size=BEAMS * USERS)]
    total = 0.0
    for step in range(index.depth + 1):
        live = [c for c in picked if len(c) >= step]
        node = torch.zeros(len(live), dtype=torch.long)
        for j in range(step):  # walk to the prefix (not timed)
            node = index.child(node, index.columns(j)[[c[j] for c in live]])
        width = index.columns(step).shape[0]
        scores = torch.randn(len(live), width).log_softmax(-1)
        best = float("inf")
        for _ in range(repeats):
            kept = scores.clone()
            tokens = index.columns(step)[torch.randint(0, max(1, width - 1), (len(live),))]
            start = time.perf_counter()
            index.restrict(kept, node, step)
            index.child(node, tokens)
            best = min(best, time.perf_counter() - start)
        total += best
    return total / (index.depth + 1) * 1e3


def exact_scoring(table: SidTable, repeats: int = 3) -> dict[str, Any]:
    """The tree family's cost over ``table``'s catalog: the trie's build, the model's
    parameters, and scoring every SID for a batch of users (best of ``repeats``)."""
    trie, build = measured(lambda: Trie(table))
    n = len(table.codes)
    model = TreeSID(n, trie, TREE_SHAPE).eval()
    seq = torch.randint(1, n + 1, (USERS, TREE_SHAPE["max_len"]))

    def score() -> torch.Tensor:
        with torch.no_grad():
            return model.item_scores(model.encode(seq)[:, -1])

    scores, cost = measured(score)
    best = cost["seconds"]
    for _ in range(repeats - 1):
        best = min(best, measured(score)[1]["seconds"])
    return {
        "trie_build": build,
        "parameters": sum(p.numel() for p in model.parameters()),
        "ms_per_batch": round(best * 1000, 2),
        "peak_mb": cost["peak_mb"],
        "sums_to_one": bool(torch.allclose(scores.exp().sum(1), torch.ones(USERS), atol=1e-3)),
    }


def one(n: int, method: str, tmp: Path) -> dict[str, Any]:
    """Build, index, time and grow a catalog of ``n`` items with ``method``."""
    emb = tmp / f"emb_{n}"
    emb.mkdir(exist_ok=True)
    x = embeddings(n + NEW_ITEMS)
    np.save(emb / EMBEDDINGS_FILE, x[:n])
    grown = tmp / f"emb_{n}_grown"
    grown.mkdir(exist_ok=True)
    np.save(grown / EMBEDDINGS_FILE, x)
    del x
    cfg = load_config(None, [f"sid.method={method}", "sid.dedup=reassign"])
    sid = tmp / f"sid_{n}_{method}"
    report, build = measured(lambda: build_sids(emb, sid, cfg))
    table = read_sid_dir(sid)
    offsets = np.cumsum([0, *table.codebook_sizes])
    ids = [
        [QWEN_VOCAB + int(offsets[lv]) + c for c in range(k)]
        for lv, k in enumerate(table.codebook_sizes)
    ]
    vocab = QWEN_VOCAB + int(offsets[-1])
    catalog = Catalog.from_table(table)
    index, indexing = measured(lambda: PrefixIndex(catalog, ids, QWEN_EOS, vocab))
    step_ms = constraint_ms_per_step(index)
    assigned, assign = measured(
        lambda: assign_sids(sid, grown, tmp / f"sid_{n}_{method}_grown", overwrite=True)
    )
    return {
        "items": n,
        "method": method,
        "sid_build": build,
        "distinct_sids": report["distinct_sids"],
        "collision_rate_before_dedup": round(report["collision_rate_before_dedup"], 4),
        "levels": [lv.get("used") for lv in report.get("levels", [])],
        "largest_cluster_level0": int(np.bincount([c[0] for c in table.codes]).max()),
        "prefix_index": indexing,
        "widest_node_per_level": index.tail_widths,
        "dense_levels": sorted(index.dense),
        "constraint_ms_per_step": round(step_ms, 3),
        "sid_assign_1000_new": assign,
        "assigned_distinct": assigned["distinct_sids"] == n + NEW_ITEMS,
        "tree_exact_scoring": exact_scoring(table),
    }


def run(sizes: tuple[int, ...] = SIZES, methods: tuple[str, ...] = METHODS) -> dict[str, Any]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for method in methods:
                row = one(n, method, Path(tmp))
                print(row, file=sys.stderr)
                results.append(row)
    ratios = {}
    for method in methods:
        rows = [r for r in results if r["method"] == method]
        if len(rows) > 1:
            ratios[method] = {
                "constraint_largest_over_smallest": round(
                    rows[-1]["constraint_ms_per_step"] / rows[0]["constraint_ms_per_step"], 2
                ),
                "build_seconds_largest_over_smallest": round(
                    rows[-1]["sid_build"]["seconds"] / rows[0]["sid_build"]["seconds"], 1
                ),
                "items_largest_over_smallest": rows[-1]["items"] // rows[0]["items"],
                "exact_scoring_largest_over_smallest": round(
                    rows[-1]["tree_exact_scoring"]["ms_per_batch"]
                    / rows[0]["tree_exact_scoring"]["ms_per_batch"],
                    1,
                ),
            }
    return {
        "benchmark": "scale",
        "protocol": f"synthetic {DIM}-d unit-norm embeddings ({TOPICS} topics x {SUBTOPICS} "
        "subtopics), sid build with 3 levels x 256 codes and reassign de-duplication; prefix "
        f"index over Qwen2.5's {QWEN_VOCAB} tokens plus the SID tokens; constraint: mask of a "
        f"step's columns and trie walk for {BEAMS} beams x {USERS} users at real prefixes, "
        f"best of 5, mean over steps; sid assign: {NEW_ITEMS} new items with frozen codebooks; "
        f"tree exact scoring: every SID's log-probability for {USERS} users of "
        f"{TREE_SHAPE['max_len']} items (the Beauty recipe's {TREE_SHAPE['hidden']}-d model, "
        "random weights), best of 3; "
        "peak_mb: the process's resident set (sampled every ms), added_mb: above where it was",
        "results": results,
        "ratios": ratios,
        "machine": machine(),
        "sidrec_commit": git_commit(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--out", type=Path, help="also write the JSON here")
    a = p.parse_args(argv)
    print_report(run(tuple(a.sizes), tuple(a.methods)), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
