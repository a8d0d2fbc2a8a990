"""``sidrec serve``: recommendations and item registration over HTTP (FastAPI on uvicorn).

- ``POST /recommend {"user_id": ...}`` or ``{"history": [...], "k": 10}``: the top ``k`` items
  by constrained beam search. Concurrent requests are micro-batched: the first request of a
  batch waits at most ``serve.max_wait_ms`` for others, up to ``serve.max_batch``. Every
  request decodes ``serve.num_beams`` beams, so an answer does not depend on its batch.
- Writes, which need ``Authorization: Bearer <token>`` (``$SIDREC_ADMIN_TOKEN`` or
  ``serve.admin_token_file``; 401 without it, 403 when wrong, when no token is configured or
  with ``serve.read_only``): ``POST /items {"source_id", "title", ...}`` (or ``"text"``, or
  ``"embedding"``): the item gets a SID from the frozen quantizer and the registry;
  ``DELETE /items/{source_id}``: never recommended again; ``POST /interactions``: a user's
  history grows.
- ``GET /health`` (liveness), ``GET /ready`` (503 while the batcher is down or the registry is
  unreachable or lost data), ``GET /metrics`` (requests, errors, batch sizes, latency
  percentiles; Prometheus' text format for a scraper's Accept header).

Every answer carries its request id and the model and catalog versions. Decoding runs on one
worker thread, one batch at a time; registrations on a writer thread; growing the catalog by
registered items on an indexer thread, swapped in between two batches. Before each batch the
service reads the registry's version and queues the items other replicas registered, so every
replica recommends every registered item. While the registry is unreachable, writes answer
503 and recommendations go on over the items already known.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import polars as pl
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sidrec.core.encoder import item_texts, load_encoder
from sidrec.core.errors import SidrecError
from sidrec.core.io import read_json, write_json
from sidrec.core.sids import parse_sid
from sidrec.serve.batching import Metrics, MicroBatcher, Overloaded
from sidrec.serve.recommend import Recommender
from sidrec.serve.registry import Allocator, PrefixFull, Registered, RegistryUnavailable

# after the registry failed, how long recommendations go on without asking it again
RETRY_SECONDS = 1.0
# how long a registration waits for this replica to index its item
INDEX_WAIT = 300.0
# one JSON line per request (serve.access_log)
ACCESS = logging.getLogger("sidrec.access")
# the environment variable holding the write token (else serve.admin_token_file)
TOKEN_ENV = "SIDREC_ADMIN_TOKEN"


class Unauthorized(SidrecError):
    """A write without credentials (401)."""


class Forbidden(SidrecError):
    """A write this replica refuses: wrong token, no token configured, or read-only (403)."""


def write_token(serve: dict[str, Any]) -> str | None:
    """The token writes must carry: ``$SIDREC_ADMIN_TOKEN``, else the first line of
    ``serve.admin_token_file``; None when neither is set (writes refused)."""
    token, file = os.environ.get(TOKEN_ENV, "").strip(), serve["admin_token_file"]
    if not token and file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise SidrecError(f"serve.admin_token_file: {path} does not exist")
        token = (path.read_text(encoding="utf-8").splitlines() or [""])[0].strip()
    return token or None


class UnknownUser(SidrecError):
    """A ``user_id`` with no known history (404)."""


class UnknownItem(SidrecError):
    """A source id the catalog does not have (404)."""


class UserRef(NamedTuple):
    """A request for a user's own history, looked up on the worker."""

    user_id: str


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str | None = None
    history: list[int | str] | None = Field(default=None, min_length=1)
    k: int = Field(default=10, ge=1)
    # leave the history's own items out (default: the model's evaluate.exclude_history)
    exclude_history: bool | None = None

    @model_validator(mode="after")
    def _one_of(self) -> RecommendRequest:
        if (self.user_id is None) == (self.history is None):
            raise ValueError('give exactly one of "user_id" or "history"')
        return self


# the longest text field (characters), category list and embedding an item may carry
MAX_TEXT, MAX_CATEGORIES, MAX_DIM = 10_000, 100, 8_192


class ItemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_id: str = Field(min_length=1, max_length=512)
    title: str = Field(default="", max_length=MAX_TEXT)
    description: str = Field(default="", max_length=MAX_TEXT)
    brand: str = Field(default="", max_length=MAX_TEXT)
    categories: list[str] = Field(default=[], max_length=MAX_CATEGORIES)
    # the text to embed (default: the model's embed.template over the fields above)
    text: str | None = Field(default=None, max_length=MAX_TEXT)
    embedding: list[float] | None = Field(default=None, max_length=MAX_DIM)


class DeadlineExceeded(SidrecError):
    """No answer within ``serve.deadline_ms`` (504)."""


class InteractionsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=512)
    # item ids (numbers) or source ids (strings), oldest first
    items: list[int | str] = Field(min_length=1, max_length=1000)


class Service:
    """A loaded model, its catalog and the registry: what the HTTP routes call.

    Args:
        rec: the model and the catalog it serves.
        sid_dir: the SID directory of that catalog (its frozen quantizer codes new items).
        registry: a :mod:`~sidrec.serve.registry` registry; its ``n_base`` first items are the
            base catalog, the rest of ``rec``'s catalog its first registered items.
        cfg: a resolved config; ``serve`` is read, and ``embed`` (the model's own) for text.
        histories: user id -> item ids, for ``{"user_id": ...}`` requests.
        record: where this replica records the registry's epoch and the registered items it
            has seen (a Redis registry), so that any replica, a new one too, refuses to
            allocate once the registry lost data.
        loader: what :meth:`reload` serves, loaded again (with ``--state``), when the file
            ``watched`` changes (every ``serve.reload_seconds``).
    """

    def __init__(
        self,
        rec: Recommender,
        sid_dir: Any,
        registry: Any,
        cfg: dict[str, Any],
        histories: dict[str, list[int]] | None = None,
        record: Path | None = None,
        loader: Callable[[], tuple[Recommender, dict[str, list[int]]]] | None = None,
        watched: Path | None = None,
    ) -> None:
        s = cfg["serve"]
        bounds = (s["max_history"], s["max_queue"], s["max_body_bytes"])
        if min(bounds) < 1:
            raise SidrecError(
                "serve.max_history, serve.max_queue and serve.max_body_bytes must be >= 1, got "
                f"{bounds}"
            )
        if s["num_beams"] < 1 or s["max_batch"] < 1 or s["max_wait_ms"] < 0:
            raise SidrecError(
                "serve.num_beams and serve.max_batch must be >= 1 and serve.max_wait_ms >= 0, "
                f"got {s['num_beams']}, {s['max_batch']} and {s['max_wait_ms']}"
            )
        self.rec, self.registry, self.cfg = rec, registry, cfg
        self.histories = histories or {}
        # items 0..n_base-1 are the base catalog's; the registry hands out n_base, n_base+1, ...
        self.n_base = registry.n_base
        self.known = len(rec.table.codes) - self.n_base  # registered items this replica has
        if self.known < 0:
            raise SidrecError(
                f"the registry starts at item {self.n_base} but the catalog has "
                f"{len(rec.table.codes)} items"
            )
        self.alloc = Allocator(sid_dir, rec.table.codes[: self.n_base], s["prefix_capacity"])
        self.record, self.loader, self.watched = record, loader, watched
        self.reload_error: str | None = None
        self.recorded = read_json(record) if record is not None and record.exists() else {}
        self.retry_at = 0.0
        self.registry_error: str | None = None
        self.encoder: Any = None
        self.token, self.read_only = write_token(s), bool(s["read_only"])
        self.metrics = Metrics()
        # decoding on the worker; registrations on the writer; growing the catalog on the
        # indexer, swapped in under `serving` between two batches
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sidrec-serve")
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sidrec-write")
        self.indexer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sidrec-index")
        self.sync_lock, self.serving = threading.Lock(), threading.Lock()
        self.indexed = threading.Condition()
        self.pending: list[Registered] = []
        self.adopted, self.index_error = self.known, cast(str | None, None)
        self.inactive: set[int] = set()  # deactivated items: never recommended

    # -- catalog -------------------------------------------------------------------------
    def sync(self, strict: bool = False) -> None:
        """Queue the items registered since this replica last looked for indexing. When the
        registry is unreachable this keeps the catalog as it is (``strict``: raises)."""
        if not strict and time.monotonic() < self.retry_at:
            return
        try:
            with self.sync_lock:
                version, epoch, inactive = self.registry.status()
                self._check(version, epoch)
                if inactive != len(self.inactive):
                    self.inactive = self.registry.inactive_items()
                self._queue(self.registry.since(self.known) if version > self.known else [])
                self._write_record(epoch)
        except RegistryUnavailable as e:
            self.registry_error = str(e)
            self.retry_at = time.monotonic() + RETRY_SECONDS
            if strict:
                raise
            return
        self.registry_error = None

    def _check(self, version: int, epoch: str) -> None:
        """Refuse a registry that lost data: fewer items than this replica (or its record)
        has seen, or another epoch than the recorded one."""
        seen = max(self.known, self.recorded.get("count", 0))
        other = self.recorded.get("epoch") not in (None, epoch)
        if version < seen or other:
            why = "another epoch than recorded" if other else f"{version} registered items"
            raise RegistryUnavailable(
                f"the SID registry lost data: it holds {why}, but {seen} were handed out "
                f"(recorded in {self.record}); restore it from its persistence (Redis AOF/RDB) "
                "before registering more, so that no id or SID is handed out twice"
            )

    def _write_record(self, epoch: str) -> None:
        if self.record is None or self.known <= self.recorded.get("count", 0):
            return
        self.recorded = {"epoch": epoch, "count": self.known}
        try:
            write_json(self.record, self.recorded)
        except OSError as e:
            raise RegistryUnavailable(
                f"cannot record the registry's state in {self.record} ({e}): set "
                "serve.registry_record to a writable file"
            ) from e

    def _queue(self, new: list[Registered]) -> None:
        """Take ``new`` registry entries; the indexer makes them recommendable."""
        for i, r in enumerate(new):
            if r.item_id != self.n_base + self.known + i:
                raise SidrecError(
                    f"the registry's item {r.item_id} is out of order "
                    f"(expected {self.n_base + self.known + i})"
                )
        if new:
            self.known += len(new)
            self.pending.extend(new)
            self.indexer.submit(self._index)

    def _index(self) -> None:
        """On the indexer thread: build the catalog grown by every pending item aside (the
        slow part: the prefix index, or the tree over the new SIDs), then swap it in between
        two batches; recommendations go on meanwhile."""
        with self.sync_lock:
            taken, self.pending, rec = self.pending, [], self.rec
        if not taken:
            return
        start = time.perf_counter()
        try:
            growth = rec.grown([(parse_sid(r.sid), r.title, r.source_id) for r in taken])
        except Exception as e:  # the items wait for the next try; waiters hear why
            with self.sync_lock:
                self.pending[:0] = taken
            with self.indexed:
                self.index_error = f"indexing {len(taken)} new items failed: {e}"
                self.indexed.notify_all()
            return
        with self.serving:
            if self.rec is not rec:  # reloaded meanwhile: the new catalog queued its own
                return
            self.rec.adopt(growth)
        with self.indexed:
            self.adopted += len(taken)
            self.index_error = None
            self.indexed.notify_all()
        self.metrics.indexed(len(taken), time.perf_counter() - start)

    def reload(self) -> None:
        """Serve what ``loader`` gives now (a model or catalog ``sidrec update`` promoted, of
        the same base catalog), swapped in between two batches; the items registered since
        that catalog was made are indexed again."""
        rec, histories = self.loader()
        n = len(rec.table.codes)
        if rec.table.codes[: self.n_base] != self.rec.table.codes[: self.n_base]:
            raise SidrecError("the new catalog does not extend the base catalog served now")
        with self.sync_lock, self.serving:
            self.rec, self.histories = rec, histories
            self.known = n - self.n_base
            self.pending = []
            with self.indexed:
                self.adopted = self.known
                self.indexed.notify_all()
        self.metrics.reloads += 1
        self.sync()

    def wait_indexed(self, count: int, timeout: float = INDEX_WAIT) -> None:
        """Wait until the first ``count`` registered items are recommendable here."""
        with self.indexed:
            self.indexed.wait_for(
                lambda: self.adopted >= count or self.index_error is not None, timeout
            )
            if self.adopted < count:
                raise RegistryUnavailable(
                    self.index_error
                    or f"registered items are still being indexed after {timeout:.0f} s: retry"
                )

    # -- recommendations -----------------------------------------------------------------
    def history(self, req: RecommendRequest) -> list[int | str] | UserRef:
        """The history a request asks about, as given, or its user (both resolved on the
        worker, after the replica has synced); raises naming a ``k`` above the beams."""
        if req.k > self.cfg["serve"]["num_beams"]:
            raise SidrecError(
                f"k={req.k} is more than the {self.cfg['serve']['num_beams']} beams decoded "
                "(serve.num_beams)"
            )
        if req.history is not None:
            limit = self.cfg["serve"]["max_history"]
            if len(req.history) > limit:
                raise SidrecError(
                    f"the history holds {len(req.history)} items, more than serve.max_history="
                    f"{limit}: send the most recent ones"
                )
            return req.history
        return UserRef(req.user_id)

    def user_history(self, user: str) -> list[int]:
        """What ``user`` did: its history in the served data, then the interactions recorded
        through ``POST /interactions`` (kept while the registry is unreachable: the data's)."""
        recorded: list[int] = []
        if time.monotonic() >= self.retry_at:  # not while the registry is known to be down
            try:
                recorded = self.registry.interactions(user)
            except RegistryUnavailable as e:
                self.registry_error = str(e)
                self.retry_at = time.monotonic() + RETRY_SECONDS
        found = [*self.histories.get(user, []), *recorded]
        if not found:
            raise UnknownUser(f"unknown user_id {user!r}: give its history instead")
        return found[-self.cfg["serve"]["max_history"] :]

    def recommend_batch(self, batch: list[tuple[Any, int, bool]]) -> list[list[dict] | SidrecError]:
        """Top items for ``(history, k, exclude_history)`` requests, decoded together (on the
        worker thread) after the items other replicas registered are added, so a history may
        name them; a history with unknown ids gets its error in its place. With
        ``exclude_history`` the history's items are dropped from the decoded beams, as
        ``evaluate`` does (fewer than ``k`` may remain)."""
        self.sync()
        with self.serving:
            resolved = self._resolve([h for h, _, _ in batch])
        if self.adopted < self.known and any(isinstance(h, SidrecError) for h in resolved):
            # a history may name an item another replica registered: wait for its indexing
            self.wait_indexed(self.known)
        with self.serving:
            resolved = self._resolve([h for h, _, _ in batch])
            good = [h for h in resolved if not isinstance(h, SidrecError)]
            # a catalog smaller than serve.num_beams: all of it
            beams = min(self.cfg["serve"]["num_beams"], self.rec.catalog_size)
            found = iter(self.rec.recommend(good, beams, len(good)) if good else [])
        out: list[list[dict] | SidrecError] = []
        for h, (_, k, exclude) in zip(resolved, batch, strict=True):
            if isinstance(h, SidrecError):
                out.append(h)
                continue
            items = next(found)
            # deactivated items, and with exclude_history the history's, are left out
            dropped = self.inactive | set(h) if exclude else self.inactive
            out.append([x for x in items if x["item_id"] not in dropped][:k])
        return out

    def _resolve(self, histories: list[Any]) -> list[list[int] | SidrecError]:
        resolved: list[list[int] | SidrecError] = []
        for history in histories:
            try:
                if isinstance(history, UserRef):
                    history = self.user_history(history.user_id)
                resolved.append(self.rec.resolve(history))
            except SidrecError as e:
                resolved.append(e)
        return resolved

    # -- registration --------------------------------------------------------------------
    def _embedding(self, req: ItemRequest) -> np.ndarray:
        if req.embedding is not None:
            return np.asarray([req.embedding], dtype=np.float32)
        e = self.cfg["embed"]
        if req.text is not None:
            text = req.text
        else:
            row = req.model_dump(include={"title", "description", "brand", "categories"})
            text = item_texts(pl.DataFrame([row]), e["template"], e["max_chars"])[0][0]
        if not text.strip():
            raise SidrecError("the item has no text to embed: give a title, text or embedding")
        if self.encoder is None:
            self.encoder = load_encoder(e["model"], e["max_seq_length"], e["device"])
        return self.encoder.encode(
            [text[: e["max_chars"]]], normalize_embeddings=e["normalize"], convert_to_numpy=True
        ).astype(np.float32)

    def register(self, req: ItemRequest) -> Registered:
        """Register one item (on the writer thread, so recommendations go on): idempotent per
        source id; returns once this replica can recommend it."""
        if req.source_id in self.rec.by_source and self.rec.by_source[req.source_id] < self.n_base:
            i = self.rec.by_source[req.source_id]
            return Registered(i, self.rec.sids[i], self.rec.titles[i], req.source_id, False)
        self.sync(strict=True)
        got = self.alloc.register(
            self.registry, self._embedding(req), req.source_id, req.title, "the item's embedding"
        )
        self.sync(strict=True)
        self.wait_indexed(got.item_id - self.n_base + 1)  # recommended from the next request on
        return got

    def deactivate(self, source_id: str) -> dict[str, Any]:
        """Stop recommending the item of ``source_id`` on every replica (on the writer
        thread); its id and SID are never handed out again."""
        self.sync(strict=True)
        item = self.rec.by_source.get(source_id)
        if item is None:
            raise UnknownItem(f"unknown source_id {source_id!r}")
        changed = self.registry.deactivate(item)
        self.sync(strict=True)
        return {"item_id": item, "source_id": source_id, "active": False, "changed": changed}

    def record_interactions(self, req: InteractionsRequest) -> dict[str, Any]:
        """Append items to a user's history (on the writer thread), shared by every replica
        through the registry; the user's next recommendation follows them."""
        self.sync(strict=True)
        with self.serving:
            ids = self.rec.resolve(req.items)
        kept = self.registry.record(req.user_id, ids, self.cfg["serve"]["max_history"])
        return {"user_id": req.user_id, "recorded": len(ids), "recorded_history": len(kept)}

    def authorize(self, header: str | None) -> None:
        """Refuse a write unless ``header`` (the request's Authorization) carries this
        replica's token, compared in constant time."""
        if self.read_only:
            raise Forbidden("this replica is read-only (serve.read_only): writes are refused")
        if self.token is None:
            raise Forbidden(
                f"writes are off: set {TOKEN_ENV} (or serve.admin_token_file) on the replica and "
                "send it as 'Authorization: Bearer <token>'"
            )
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise Unauthorized("a write needs 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise Forbidden("the write token is wrong")

    def versions(self) -> tuple[str, int]:
        """The served model (its run id) and the catalog's version (the items it serves)."""
        return self.rec.version, len(self.rec.titles)

    def health(self) -> dict[str, Any]:
        try:
            self.registry.ping()
            registry = "ok"
        except RegistryUnavailable as e:
            registry = f"unreachable: {e}"
        model, catalog = self.versions()
        return {
            "status": "ok",
            "model": model,
            "catalog_version": catalog,
            "registry": self.registry.name,
            "registry_status": registry,
            "items": len(self.rec.titles),
            "registered_items": self.known,
            # registered items still being indexed here, and why the last indexing failed
            "indexing": self.known - self.adopted,
            "index_error": self.index_error,
            # why the last hot reload failed (the replica serves on what it had)
            "reload_error": self.reload_error,
            # why the last sync failed (registrations answer 503 until it clears)
            "registry_error": self.registry_error,
        }


ERRORS = (
    (DeadlineExceeded, 504),
    (RegistryUnavailable, 503),
    (Overloaded, 429),
    (PrefixFull, 409),
    (UnknownUser, 404),
    (UnknownItem, 404),
    (Unauthorized, 401),
    (Forbidden, 403),
    (SidrecError, 422),
)


def _request_id(given: str | None) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new one."""
    if given and len(given) <= 128 and all(c.isalnum() or c in "-_.:" for c in given):
        return given
    return uuid.uuid4().hex


def _add_metering(app: FastAPI, service: Service) -> None:
    """Refuse a body over ``serve.max_body_bytes`` (413); give every answer its request id
    (``X-Request-ID``, the client's or a new one) and the model and catalog versions
    (``X-Sidrec-Model``, ``X-Sidrec-Catalog``); record every request's route template, status
    and latency, and write one access-log line per request (no body, no header values)."""
    limit = service.cfg["serve"]["max_body_bytes"]

    @app.middleware("http")
    async def timed(request: Request, call_next: Callable) -> Any:
        start = time.perf_counter()
        rid = request.state.request_id = _request_id(request.headers.get("x-request-id"))
        size = request.headers.get("content-length", "0")
        if not size.isdigit() or int(size) > limit:
            response: Any = JSONResponse(
                {"detail": f"the body is over serve.max_body_bytes={limit} bytes"}, 413
            )
        else:
            response = await call_next(request)
        # by route template, not raw path: unknown paths share one label
        route = request.scope.get("route")
        label = route.path if route is not None else "unmatched"
        seconds = time.perf_counter() - start
        service.metrics.record(label, response.status_code, seconds)
        model, catalog = service.versions()
        response.headers.update(
            {"X-Request-ID": rid, "X-Sidrec-Model": model, "X-Sidrec-Catalog": str(catalog)}
        )
        ACCESS.info(
            json.dumps(
                {
                    "request_id": rid,
                    "method": request.method,
                    "route": label,
                    "status": response.status_code,
                    "ms": round(seconds * 1000, 2),
                    "client": request.client.host if request.client else None,
                    "model": model,
                    "catalog": catalog,
                }
            )
        )
        return response


def _add_status_routes(app: FastAPI, service: Service) -> None:
    """``/health`` (liveness), ``/ready`` (for a load balancer) and ``/metrics``; the registry
    is asked off the event loop."""

    async def checked() -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(None, service.health)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return await checked()

    @app.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        """200 when this replica can take traffic: its batcher runs and its registry is
        reachable and consistent; else 503 naming what is wrong."""
        found = await checked()
        problems = [] if found["registry_status"] == "ok" else [found["registry_status"]]
        if request.app.state.batcher_task.done():
            problems.append("the micro-batcher is not running")
        if found["registry_error"]:
            problems.append(found["registry_error"])
        return JSONResponse({"ready": not problems, "problems": problems}, 503 if problems else 200)

    @app.get("/metrics")
    async def metrics(request: Request) -> Any:
        """JSON, or Prometheus' text format for a scraper (Accept: text/plain or OpenMetrics)."""
        accept = request.headers.get("accept", "")
        if "text/plain" in accept or "openmetrics" in accept:
            return Response(service.metrics.prometheus(), media_type=CONTENT_TYPE_LATEST)
        return {**service.metrics.summary(), **await checked()}


def _add_write_routes(app: FastAPI, service: Service) -> None:
    """The routes that change what every replica serves (the write token checked first), run
    on the writer thread."""

    @app.post("/items")
    async def items(req: ItemRequest, request: Request) -> dict[str, Any]:
        service.authorize(request.headers.get("authorization"))
        loop = asyncio.get_running_loop()
        got = await loop.run_in_executor(service.writer, service.register, req)
        model, catalog = service.versions()
        return {**got._asdict(), "model": model, "catalog_version": catalog}

    @app.delete("/items/{source_id}")
    async def deactivate(source_id: str, request: Request) -> dict[str, Any]:
        service.authorize(request.headers.get("authorization"))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(service.writer, service.deactivate, source_id)

    @app.post("/interactions")
    async def interactions(req: InteractionsRequest, request: Request) -> dict[str, Any]:
        service.authorize(request.headers.get("authorization"))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(service.writer, service.record_interactions, req)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


async def _watch(service: Service, every: float) -> None:
    """Reload ``service`` whenever its watched file changes (off the event loop)."""
    assert service.watched is not None
    last = _stamp(service.watched)
    while True:
        await asyncio.sleep(every)
        now = _stamp(service.watched)
        if now == last:
            continue
        last = now
        try:
            await asyncio.get_running_loop().run_in_executor(None, service.reload)
            service.reload_error = None
        except Exception as e:  # a half-written or bad state: serve on, say why
            service.reload_error = f"reloading {service.watched} failed: {e}"


def create_app(service: Service) -> FastAPI:
    """The HTTP routes over ``service``."""
    s = service.cfg["serve"]
    deadline = s["deadline_ms"] / 1000 or None  # seconds; None: no deadline
    reload_every = s["reload_seconds"] if service.watched is not None else 0

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        app.state.batcher = MicroBatcher(
            service.recommend_batch,
            service.worker,
            s["max_batch"],
            s["max_wait_ms"] / 1000,
            service.metrics.batch,
            s["max_queue"],
        )
        app.state.batcher_task = asyncio.create_task(app.state.batcher.run())
        watcher = None
        if reload_every > 0:
            watcher = asyncio.create_task(_watch(service, reload_every))
        yield
        app.state.batcher_task.cancel()
        if watcher is not None:
            watcher.cancel()

    def batcher(app: FastAPI) -> MicroBatcher:
        """The micro-batcher, its task restarted (and counted) if it died."""
        task = app.state.batcher_task
        if task.done():
            service.metrics.restarted()
            app.state.batcher_task = asyncio.create_task(app.state.batcher.run())
        return app.state.batcher

    app = FastAPI(title="sidrec", lifespan=lifespan)

    _add_metering(app, service)

    def answer(status: int) -> Callable:
        extra = {401: {"WWW-Authenticate": "Bearer"}, 429: {"Retry-After": "1"}}.get(status)
        return lambda _, e: JSONResponse({"detail": str(e)}, status, headers=extra)

    for kind, status in ERRORS:
        app.add_exception_handler(kind, answer(status))

    @app.post("/recommend")
    async def recommend(req: RecommendRequest, request: Request) -> dict[str, Any]:
        history = service.history(req)
        exclude = req.exclude_history
        if exclude is None:
            exclude = bool(service.cfg["evaluate"]["exclude_history"])
        try:
            items = await asyncio.wait_for(
                batcher(request.app).submit((history, req.k, exclude)), deadline
            )
        except TimeoutError:  # still queued: the batcher drops it; decoding: discarded
            raise DeadlineExceeded(
                f"no answer within serve.deadline_ms={s['deadline_ms']:g}: retry"
            ) from None
        model, catalog = service.versions()
        return {
            "user_id": req.user_id,
            "recommendations": items,
            "model": model,
            "catalog_version": catalog,
        }

    _add_write_routes(app, service)
    _add_status_routes(app, service)
    return app
