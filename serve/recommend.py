"""``sidrec recommend``: top-K items for arbitrary histories, from a model directory alone.

An LM is queried exactly as it was trained (its ``prompting.json``: a history longer than it
was trained on keeps its newest items) and decoded with beam search constrained to its bundled
SIDs; a ``tree`` model scores every SID exactly. Each SID is shown as its item (id, title,
source id) with the SID's log-probability.
This is the inference path a service wraps.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import torch

from sidrec.core.decoding import beam_search, build_decoder, load_decoder
from sidrec.core.errors import SidrecError, require_file
from sidrec.core.io import MANIFEST, read_json
from sidrec.core.model_dir import model_items, model_sids
from sidrec.core.prompts import PromptSpec
from sidrec.core.sids import SidTable
from sidrec.core.training import use_bf16
from sidrec.core.tree_model import is_tree_model, load_tree, rank_tree


class _LMRanker:
    """Top SIDs of an LM model directory by beam search constrained to the catalog."""

    def __init__(
        self,
        model_dir: Path,
        table: SidTable,
        device: torch.device,
        head: str,
        dense: int,
        bf16: bool,
    ) -> None:
        self.spec = PromptSpec.load(model_dir)
        self.model, self.tok, self.index, self.head = load_decoder(
            model_dir, table, device, head, dense, bf16
        )
        self.dense_depth = dense

    def grown(self, table: SidTable) -> Any:
        """The prefix index of ``table``, a catalog grown from the current one (built aside:
        what is served does not change until :meth:`adopt`)."""
        return build_decoder(self.model, self.tok, table, self.head, self.dense_depth).index

    def adopt(self, grown: Any) -> None:
        self.index = grown

    @property
    def size(self) -> int:
        return len(self.index.catalog.codes)

    def top(
        self, histories: Sequence[Sequence[int]], sids: list[str], k: int, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` items (N, k) and their SIDs' log-probabilities (N, k)."""
        answer = self.index.depth + 1
        prompts = [self.spec.encode(self.tok, [sids[i] for i in h], answer)[0] for h in histories]
        found, scores = [], []
        for b in range(0, len(prompts), batch_size):
            top, score = beam_search(
                self.model,
                self.index,
                prompts[b : b + batch_size],
                k,
                self.tok.pad_token_id,
                self.head,
            )
            found.append(top)
            scores.append(score)
        return self.index.catalog.representative[np.concatenate(found)], np.concatenate(scores)


class _TreeRanker:
    """Top items of a ``tree`` model directory, every SID scored exactly."""

    def __init__(self, model_dir: Path, table: SidTable, device: torch.device) -> None:
        self.model_dir, self.device = model_dir, device
        self.model = load_tree(model_dir, table, device)

    def grown(self, table: SidTable) -> Any:
        """The model over ``table``, a catalog grown from its own (new nodes start at zero),
        built aside: what is served does not change until :meth:`adopt`."""
        return load_tree(self.model_dir, table, self.device)

    def adopt(self, grown: Any) -> None:
        self.model = grown

    @property
    def size(self) -> int:
        return int(self.model.representative.sum())

    def top(
        self, histories: Sequence[Sequence[int]], sids: list[str], k: int, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` items (N, k) and their SIDs' log-probabilities (N, k)."""
        return rank_tree(self.model, [list(h) for h in histories], k, batch_size)[:2]


class Growth(NamedTuple):
    """A catalog grown by ``items``: its SID table and the ranker's state over it."""

    table: SidTable
    items: list[tuple[list[int], str, str]]
    ranker: Any


class Recommender:
    """A model directory (either family) loaded for inference:
    ``rec.recommend([rec.resolve([12, "SYN000300"])])`` gives the top 10 items after item 12
    and the item whose source id is SYN000300.

    ``catalog`` (an items table and a SID directory, as ``sidrec update`` keeps them) serves a
    catalog grown from the model's own: the same SIDs for the model's items, new items after.
    """

    def __init__(
        self,
        model_dir: str | Path,
        bf16: bool | None = None,
        dense_depth: int = 2,
        head: str = "restricted",
        catalog: tuple[Path, Path] | None = None,
    ) -> None:
        self.model_dir = require_file(model_dir, "model directory")
        if catalog is None:
            self.table, _ = model_sids(self.model_dir)
            items = model_items(self.model_dir)
        else:
            items_file, sid_dir = catalog
            self.table, _ = model_sids(self.model_dir, sid_dir)
            items = pl.read_parquet(require_file(items_file, "the catalog's items table"))
        if items.height != len(self.table.codes):
            raise SidrecError(
                f"{self.model_dir}: its items table has {items.height} rows but its SIDs "
                f"cover {len(self.table.codes)} items"
            )
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if is_tree_model(self.model_dir):
            self.ranker: _LMRanker | _TreeRanker = _TreeRanker(self.model_dir, self.table, device)
        else:
            self.ranker = _LMRanker(
                self.model_dir, self.table, device, head, dense_depth, use_bf16(bf16)
            )
        self.sids = self.table.sids
        manifest = self.model_dir / MANIFEST
        # what identifies the model: its run id (the directory's name without a manifest)
        self.version = str(
            read_json(manifest).get("run_id") if manifest.exists() else self.model_dir.name
        )
        self.titles = items["title"].to_list()
        self.sources = items["source_id"].to_list()
        self.by_source = {s: i for i, s in enumerate(self.sources) if s}

    @property
    def catalog_size(self) -> int:
        """How many items can be recommended (one per distinct SID)."""
        return self.ranker.size

    def grown(self, items: Sequence[tuple[list[int], str, str]]) -> Growth:
        """The catalog with new items, ``(codes, title, source_id)`` each in item-id order after
        the current ones (their SIDs use the model's code tokens), built aside: the slow part
        (the prefix index, or the tree over the new SIDs) runs while this one serves on."""
        codes = [list(c) for c, _, _ in items]
        table = SidTable([*self.table.codes, *codes], self.table.codebook_sizes)
        return Growth(table, list(items), self.ranker.grown(table))

    def adopt(self, growth: Growth) -> None:
        """Serve ``growth`` (made by :meth:`grown` from the catalog served now): a swap."""
        if len(growth.table.codes) != len(self.table.codes) + len(growth.items):
            raise SidrecError("a catalog growth must extend the catalog served now")
        for _, title, source in growth.items:
            self.by_source[source] = len(self.titles)
            self.titles.append(title)
            self.sources.append(source)
        self.ranker.adopt(growth.ranker)
        self.table, self.sids = growth.table, growth.table.sids

    def add_items(self, items: Sequence[tuple[list[int], str, str]]) -> None:
        """Make new items recommendable now (see :meth:`grown`)."""
        if items:
            self.adopt(self.grown(items))

    def resolve(self, history: Sequence[int | str]) -> list[int]:
        """Item ids of a history given as item ids (ints) or source ids (strings, e.g.
        ASINs); raises naming every unknown id."""
        n = len(self.table.codes)
        ids, unknown = [], []
        for x in history:
            if isinstance(x, bool) or not isinstance(x, (int, str)):
                unknown.append(x)
            elif isinstance(x, int):
                (ids if 0 <= x < n else unknown).append(x)
            elif x in self.by_source:
                ids.append(self.by_source[x])
            else:
                unknown.append(x)
        if unknown:
            raise SidrecError(
                f"unknown item ids {unknown[:10]!r}{' ...' if len(unknown) > 10 else ''}: "
                f"expected item ids 0..{n - 1} (numbers) or source ids of the model's items "
                "(strings)"
            )
        if not ids:
            raise SidrecError("the history is empty: give at least one item")
        return ids

    def recommend(
        self, histories: Sequence[Sequence[int]], k: int = 10, batch_size: int = 16
    ) -> list[list[dict[str, Any]]]:
        """The top ``k`` items for each history of item ids (oldest first), best first."""
        if k < 1 or batch_size < 1:
            raise SidrecError(f"--k and --batch-size must be >= 1, got {k} and {batch_size}")
        if not histories:
            return []
        items, scores = self.ranker.top(histories, self.sids, k, batch_size)
        return [
            [
                {
                    "item_id": int(i),
                    "title": self.titles[i],
                    "source_id": self.sources[i],
                    "sid": self.sids[i],
                    "score": round(float(v), 6),
                }
                for i, v in zip(row, score, strict=True)
            ]
            for row, score in zip(items.tolist(), scores.tolist(), strict=True)
        ]


def _requests(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except json.JSONDecodeError as e:
            raise SidrecError(f"stdin, line {n}: invalid JSON ({e.msg})") from None
        if not isinstance(req, dict) or not isinstance(req.get("history"), list):
            raise SidrecError(
                f'stdin, line {n}: expected {{"user_id": ..., "history": [item ids]}}, got {line!r}'
            )
        yield n, req


def _history_arg(text: str) -> list[int | str]:
    """``--history 12,7,B000123``: integers are item ids, anything else a source id."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return [int(p) if p.lstrip("-").isdigit() else p for p in parts]


def run_command(a: argparse.Namespace) -> None:
    """``sidrec recommend`` (its options: see :mod:`sidrec.app.cli`)."""
    rec = Recommender(a.model, head=a.head)
    if a.history is not None:
        found = rec.recommend([rec.resolve(_history_arg(a.history))], a.k)[0]
        print(json.dumps({"user_id": None, "recommendations": found}, ensure_ascii=False))
        return
    batch: list[tuple[Any, list[int]]] = []

    def flush() -> None:
        found = rec.recommend([h for _, h in batch], a.k, a.batch_size)
        for (user, _), items in zip(batch, found, strict=True):
            print(json.dumps({"user_id": user, "recommendations": items}, ensure_ascii=False))
        sys.stdout.flush()
        batch.clear()

    for n, req in _requests(sys.stdin):
        try:
            batch.append((req.get("user_id"), rec.resolve(req["history"])))
        except SidrecError as e:
            raise SidrecError(f"stdin, line {n}: {e}") from None
        if len(batch) == a.batch_size:
            flush()
    if batch:
        flush()
