"""The embedded demo dataset: a synthetic catalog and users whose sequences carry learnable
structure, generated deterministically from a seed with no network.

The catalog follows a category tree (``synth_catalog.json``: top category -> leaf category with
product nouns, specs and complementary leaves). Each item gets a brand, a title with a model
number, a description and a popularity weight (Zipf). Users have favourite leaves and brands;
each next item is, in order of chance, a complement of the current item (printer -> filament),
another item of the same leaf (brand-loyal), a repeat purchase, or an item from a favourite leaf.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from sidrec.core.dataset import items_frame, sequences_frame
from sidrec.core.errors import SidrecError

CATALOG_FILE = Path(__file__).with_name("synth_catalog.json")
_BRAND_HEADS = [
    "Nova",
    "Apex",
    "Terra",
    "Lumi",
    "Vela",
    "Orbi",
    "Kora",
    "Bright",
    "True",
    "Pure",
    "Iron",
    "Blue",
    "Summit",
    "Ever",
    "North",
    "Cedar",
    "Silver",
    "Delta",
    "Sol",
    "Aura",
]
_BRAND_TAILS = [
    "tek",
    "craft",
    "line",
    "works",
    "labs",
    "ware",
    "ora",
    "ix",
    "field",
    "stone",
    "gen",
    "smith",
]
_ADJECTIVES = [
    "Premium",
    "Professional",
    "Heavy Duty",
    "Compact",
    "Classic",
    "Ultra",
    "Eco",
    "Deluxe",
    "Essential",
    "Advanced",
]
_PITCHES = [
    "Built for everyday use and made to last.",
    "Trusted by professionals and beginners alike.",
    "Backed by a two-year warranty and friendly support.",
    "Designed and tested in our own lab for consistent quality.",
    "A best seller in its class for reliability and value.",
]
# Chances of each kind of next step (the rest: an item from one of the user's favourite leaves).
P_COMPLEMENT, P_SAME_LEAF, P_REPEAT = 0.40, 0.22, 0.05
MIN_ITEMS_PER_LEAF = 3
T0, SPAN = 1_672_531_200, 2 * 365 * 86_400  # 2023-01-01, two years


@dataclass(frozen=True)
class _Leaf:
    top: str
    name: str
    nouns: list[str]
    specs: list[str]
    complements: list[str]


def _load_leaves() -> list[_Leaf]:
    tree = json.loads(CATALOG_FILE.read_text(encoding="utf-8"))
    return [
        _Leaf(top, name, v["nouns"], v["specs"], v["complements"])
        for top, leaves in tree.items()
        for name, v in leaves.items()
    ]


def _brands(rng: np.random.Generator, tops: list[str], per_top: int) -> dict[str, list[str]]:
    names = [h + t for h in _BRAND_HEADS for t in _BRAND_TAILS]
    picked = rng.choice(len(names), size=len(tops) * per_top, replace=False)
    return {
        top: [names[j] for j in picked[i * per_top : (i + 1) * per_top]]
        for i, top in enumerate(tops)
    }


def _pick(rng: np.random.Generator, pool: np.ndarray, weight: np.ndarray, avoid: int) -> int:
    """One item of ``pool`` (item ids, shape [P]) drawn by ``weight`` (shape [N]), not ``avoid``
    unless it is the only one."""
    pool = pool[pool != avoid] if len(pool) > 1 else pool
    w = weight[pool]
    return int(rng.choice(pool, p=w / w.sum()))


class _World(NamedTuple):
    """The catalog a user's sequence is drawn from."""

    leaves: list[Any]
    leaf_of: np.ndarray  # int [n_items]: each item's leaf
    by_leaf: dict[int, np.ndarray]  # leaf -> its items
    brands: dict[str, list[str]]  # top category -> its 8 brands, most popular first
    brand_pop: np.ndarray  # float [8]: brand popularity by rank
    pop: np.ndarray  # float [n_items]: item popularity
    item_brands: np.ndarray  # str [n_items]
    complements: list[np.ndarray]  # per item, the items it is bought with


def _item_texts(
    rng: np.random.Generator,
    leaves: list[Any],
    leaf_of: np.ndarray,
    brands: dict[str, list[str]],
    brand_pop: np.ndarray,
) -> tuple[list[str], list[str], list[str], list[list[str]]]:
    """Each item's title, description, brand and category path."""
    titles, descriptions, item_brands, categories = [], [], [], []
    for li in leaf_of:
        leaf = leaves[li]
        brand = brands[leaf.top][rng.choice(8, p=brand_pop / brand_pop.sum())]
        noun = leaf.nouns[rng.integers(len(leaf.nouns))]
        spec = leaf.specs[rng.integers(len(leaf.specs))]
        adj = _ADJECTIVES[rng.integers(len(_ADJECTIVES))]
        model = f"{brand[:2].upper()}-{rng.integers(100, 9999)}"
        styled = f"{adj} {noun}" if rng.random() < 0.5 else noun
        titles.append(f"{brand} {styled}, {spec} ({model})")
        descriptions.append(
            f"The {brand} {noun.lower()} ({spec}) is {'an' if adj[0] in 'AEIOU' else 'a'} "
            f"{adj.lower()} pick from our "
            f"{leaf.name.lower()} range. {_PITCHES[rng.integers(len(_PITCHES))]} "
            f"Pairs well with our {leaf.complements[0].lower()}."
        )
        item_brands.append(brand)
        categories.append([leaf.top, leaf.name])
    return titles, descriptions, item_brands, categories


def _complements(
    rng: np.random.Generator,
    leaves: list[Any],
    leaf_of: np.ndarray,
    by_leaf: dict[int, np.ndarray],
    pop: np.ndarray,
    item_brands: np.ndarray,
) -> list[np.ndarray]:
    """Item-level complements: 1-3 popular items of a complementary leaf, same brand
    preferred."""
    leaf_index = {leaf.name: li for li, leaf in enumerate(leaves)}
    complements: list[np.ndarray] = []
    for i, li in enumerate(leaf_of):
        pool = np.concatenate([by_leaf[leaf_index[c]] for c in leaves[li].complements])
        pool = pool[pool != i]
        w = pop[pool] * np.where(item_brands[pool] == item_brands[i], 4.0, 1.0)
        k = min(len(pool), int(rng.integers(1, 4)))
        complements.append(rng.choice(pool, size=k, replace=False, p=w / w.sum()))
    return complements


def _user(rng: np.random.Generator, w: _World, leaf_pop: np.ndarray) -> tuple[list[int], list[int]]:
    """One user's items and timestamps: favourite leaves, loyal brands, then complements, the
    same leaf, repeats and other favourites."""
    favs = rng.choice(
        len(w.leaves), size=int(rng.integers(1, 4)), replace=False, p=leaf_pop / leaf_pop.sum()
    )
    loyal = {
        w.brands[w.leaves[li].top][rng.choice(8, p=w.brand_pop / w.brand_pop.sum())] for li in favs
    }
    weight = w.pop * np.where(np.isin(w.item_brands, list(loyal)), 1 + 8 * rng.beta(2, 2), 1)

    def pick(pool: np.ndarray, avoid: int = -1) -> int:
        return _pick(rng, pool, weight, avoid)

    length = min(60, 4 + int(rng.geometric(1 / 7)))
    seq = [pick(w.by_leaf[int(rng.choice(favs))])]
    while len(seq) < length:
        cur, r = seq[-1], rng.random()
        if r < P_COMPLEMENT:
            seq.append(pick(w.complements[cur], avoid=cur))
        elif r < P_COMPLEMENT + P_SAME_LEAF:
            seq.append(pick(w.by_leaf[int(w.leaf_of[cur])], avoid=cur))
        elif r < P_COMPLEMENT + P_SAME_LEAF + P_REPEAT and len(seq) > 1:
            seq.append(seq[int(rng.integers(len(seq) - 1))])
        else:
            seq.append(pick(w.by_leaf[int(rng.choice(favs))], avoid=cur))
    start = T0 + int(rng.uniform(0, 0.7) * SPAN)
    gaps = (rng.exponential(5 * 86_400, size=length) + 3600).astype(np.int64)
    return seq, (start + np.cumsum(gaps)).tolist()


def generate(
    n_items: int = 2000, n_users: int = 3000, seed: int = 42
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Generate the catalog and user sequences.

    Returns:
        ``items`` and ``sequences`` frames in the canonical schema (timestamps in seconds).
    """
    leaves = _load_leaves()
    if n_items < MIN_ITEMS_PER_LEAF * len(leaves):
        raise SidrecError(
            f"synth needs n_items >= {MIN_ITEMS_PER_LEAF * len(leaves)}, got {n_items}"
        )
    if n_users < 1:
        raise SidrecError(f"synth needs n_users >= 1, got {n_users}")
    rng = np.random.default_rng(seed)
    tops = list(dict.fromkeys(leaf.top for leaf in leaves))
    brands = _brands(rng, tops, per_top=8)
    brand_pop = 1.0 / np.arange(1, 9) ** 0.8

    # Items per leaf: a skewed share of the catalog, at least MIN_ITEMS_PER_LEAF each.
    share = rng.gamma(2.0, 1.0, size=len(leaves))
    extra = rng.multinomial(n_items - MIN_ITEMS_PER_LEAF * len(leaves), share / share.sum())
    leaf_of = np.repeat(np.arange(len(leaves)), extra + MIN_ITEMS_PER_LEAF)
    pop = 1.0 / rng.permutation(np.arange(1, n_items + 1)) ** 0.6
    titles, descriptions, item_brands, categories = _item_texts(
        rng, leaves, leaf_of, brands, brand_pop
    )
    by_leaf = {li: np.flatnonzero(leaf_of == li) for li in range(len(leaves))}
    brand_arr = np.array(item_brands)
    complements = _complements(rng, leaves, leaf_of, by_leaf, pop, brand_arr)
    world = _World(leaves, leaf_of, by_leaf, brands, brand_pop, pop, brand_arr, complements)
    leaf_pop = np.array([pop[by_leaf[li]].sum() for li in range(len(leaves))])
    drawn = [_user(rng, world, leaf_pop) for _ in range(n_users)]
    user_ids = [f"U{u:05d}" for u in range(n_users)]

    # Item ids in random order, so that an id says nothing about its category.
    new_id = rng.permutation(n_items)
    order = np.argsort(new_id)
    items = items_frame(
        {
            "title": [titles[i] for i in order],
            "description": [descriptions[i] for i in order],
            "brand": [item_brands[i] for i in order],
            "categories": [categories[i] for i in order],
            "source_id": [f"SYN{i:06d}" for i in range(n_items)],
        }
    )
    sequences = [new_id[seq].tolist() for seq, _ in drawn]
    return items, sequences_frame(user_ids, sequences, [stamps for _, stamps in drawn])
