"""Why a recommender misses: per-user segments, where decoding leaves the target's SID, and
what gets recommended instead, computed from an evaluation's ``predictions.parquet``.

Every segment labels each evaluated user; the report gives, per label, its users, its share
of the failures (target not in the top K) and HR@K / NDCG@K inside it against the rest.
Definitions (also in ``badcase_report.json`` under ``definitions``):

- ``popularity``: how often the target is a training target (``cold`` = never).
- ``history_length``: items in the evaluated history.
- ``repeat``: the target already occurs in the history.
- ``category``: the target shares no category with the history (items with categories); without
  categories, with embeddings: the target's best cosine to a history item is below the median
  over users (``far from history``).
- ``recency`` (embeddings, histories of 4+ items): the target is closer (mean cosine) to the
  last two items than to the older ones.
- ``sid``: the target's SID is held by another item too, or how many other items share every
  code of it but the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sidrec.core.metrics import user_gains

POPULARITY_EDGES = (0, 1, 5, 20, 100)  # bins [0], [1, 5), [5, 20), [20, 100), [100, inf)
HISTORY_EDGES = (1, 3, 6, 11, 21)
SIBLING_EDGES = (0, 1, 4, 16)
RECENT_ITEMS = 2
HEAD_SHARE = 0.2  # the most popular 20% of items are the head, the rest the long tail

DEFINITIONS = {
    "failure": "the target is not among the top K recommendations",
    "popularity": "times the target is a training target; cold = never",
    "history_length": "items in the evaluated history",
    "repeat": "repeat = the target already occurs in the history",
    "category": "unseen = the target shares no category with any history item; without "
    "categories: far from history = the target's best cosine to a history item is below the "
    "median over users",
    "recency": f"recent = the target's mean cosine to the last {RECENT_ITEMS} items exceeds "
    f"its mean cosine to the older ones (histories of {RECENT_ITEMS + 2}+ items)",
    "sid": "shared SID = another item holds the target's SID; otherwise the number of other "
    "items sharing every code but the last",
    "decoding_depth": "for a miss, the number of leading codes the best beam has right",
    "long_tail": f"items outside the most popular {HEAD_SHARE:.0%} (by training frequency)",
}


def bin_labels(values: np.ndarray, edges: Sequence[int], unit: str = "") -> list[str]:
    """Label each value with its bin: ``[edges[i], edges[i+1])``, the last open-ended.

    Example:
        >>> bin_labels(np.array([0, 3, 7, 40]), (0, 1, 5, 20))
        ['0', '1-4', '5-19', '20+']
    """
    names = []
    for lo, hi in zip(edges, [*edges[1:], None], strict=True):
        if hi is None:
            names.append(f"{lo}+{unit}")
        else:
            names.append(f"{lo}{unit}" if hi == lo + 1 else f"{lo}-{hi - 1}{unit}")
    idx = np.searchsorted(np.asarray(edges), values, side="right") - 1
    return [names[i] if i >= 0 else f"<{edges[0]}" for i in idx]


def popularity_segment(targets: np.ndarray, freq: np.ndarray) -> list[str]:
    labels = bin_labels(freq[targets], POPULARITY_EDGES)
    return ["cold" if f == 0 else lab for f, lab in zip(freq[targets], labels, strict=True)]


def history_segment(histories: list[list[int]]) -> list[str]:
    return bin_labels(np.array([len(h) for h in histories]), HISTORY_EDGES, " items")


def repeat_segment(histories: list[list[int]], targets: np.ndarray) -> list[str]:
    return ["repeat" if t in h else "new" for h, t in zip(histories, targets.tolist(), strict=True)]


def category_segment(
    histories: list[list[int]], targets: np.ndarray, categories: list[list[str]]
) -> list[str]:
    """``seen`` / ``unseen`` category; ``no category`` where the target has none."""
    out = []
    for h, t in zip(histories, targets.tolist(), strict=True):
        if not categories[t]:
            out.append("no category")
            continue
        seen = {c for i in h for c in categories[i]}
        out.append("seen" if seen & set(categories[t]) else "unseen")
    return out


def _unit(vectors: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norm, 1e-12)


def similarity_segment(
    histories: list[list[int]], targets: np.ndarray, emb: np.ndarray
) -> list[str]:
    """``near history`` / ``far from history`` by the target's best cosine to a history item
    against the median over users."""
    unit = _unit(emb)
    pairs = zip(histories, targets.tolist(), strict=True)
    best = np.array([float((unit[h] @ unit[t]).max()) if h else -1.0 for h, t in pairs])
    median = float(np.median(best))
    return ["far from history" if b < median else "near history" for b in best]


def recency_segment(histories: list[list[int]], targets: np.ndarray, emb: np.ndarray) -> list[str]:
    unit = _unit(emb)
    out = []
    for h, t in zip(histories, targets.tolist(), strict=True):
        if len(h) < RECENT_ITEMS + 2:
            out.append("short history")
            continue
        cos = unit[h] @ unit[t]
        recent, older = cos[-RECENT_ITEMS:].mean(), cos[:-RECENT_ITEMS].mean()
        out.append("recent" if recent > older else "older")
    return out


def sid_segment(targets: np.ndarray, codes: list[list[int]]) -> list[str]:
    """``shared SID``, or the number of other items behind the target's SID prefix, binned."""
    full: dict[tuple[int, ...], int] = {}
    prefix: dict[tuple[int, ...], int] = {}
    for c in codes:
        full[tuple(c)] = full.get(tuple(c), 0) + 1
        prefix[tuple(c[:-1])] = prefix.get(tuple(c[:-1]), 0) + 1
    out = []
    for t in targets.tolist():
        c = tuple(codes[t])
        if full[c] > 1:
            out.append("shared SID")
        else:
            n = prefix[c[:-1]] - 1
            out.append(bin_labels(np.array([n]), SIBLING_EDGES, " siblings")[0])
    return out


def decoding_depth(best: np.ndarray, targets: np.ndarray, codes: list[list[int]]) -> np.ndarray:
    """(N,) how many leading codes of the target's SID the best recommendation shares."""
    out = np.zeros(len(targets), dtype=np.int64)
    for r, (b, t) in enumerate(zip(best.tolist(), targets.tolist(), strict=True)):
        a, c = codes[b], codes[t]
        n = 0
        while n < min(len(a), len(c)) and a[n] == c[n]:
            n += 1
        out[r] = n
    return out


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = all equal, near 1 = one item takes all).

    Example:
        >>> gini(np.array([1, 1, 1, 1])), gini(np.array([0, 0, 0, 4]))
        (0.0, 0.75)
    """
    x = np.sort(np.asarray(counts, dtype=float))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def _label_order(label: str, labels: np.ndarray) -> tuple[int, float, str]:
    """Bins in their natural order (cold, then by their lower edge), other labels by size."""
    if label == "cold":
        return (0, 0.0, label)
    lead = label.split("-")[0].split("+")[0].split(" ")[0]
    if lead.isdigit():
        return (1, float(lead), label)
    return (2, -float(np.sum(labels == label)), label)


def segment_table(labels: list[str], ranks: np.ndarray, k: int) -> list[dict[str, Any]]:
    """Per label: users, share of users and of failures, HR@K / NDCG@K in it and in the rest."""
    labels_arr = np.array(labels)
    hit, gain = user_gains(ranks, k)
    failed = hit == 0
    rows = []
    for label in sorted(set(labels), key=lambda s: _label_order(s, labels_arr)):
        inside = labels_arr == label
        rest = ~inside
        rows.append(
            {
                "label": label,
                "users": int(inside.sum()),
                "share_of_users": float(inside.mean()),
                "share_of_failures": float(failed[inside].sum() / max(failed.sum(), 1)),
                "failure_rate": float(failed[inside].mean()),
                f"HR@{k}": float(hit[inside].mean()),
                f"NDCG@{k}": float(gain[inside].mean()),
                f"HR@{k}_rest": float(hit[rest].mean()) if rest.any() else None,
                f"NDCG@{k}_rest": float(gain[rest].mean()) if rest.any() else None,
            }
        )
    return rows
