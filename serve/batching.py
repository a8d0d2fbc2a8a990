"""Micro-batching and metering of ``sidrec serve``: the batcher that decodes concurrent
requests together, and the metrics every route records (JSON and Prometheus)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter

from sidrec.core.errors import SidrecError


class Overloaded(SidrecError):
    """More requests waiting than ``serve.max_queue`` (429)."""


class Metrics:
    """Request counts, status codes, batch sizes and latencies: as JSON (the last 10,000
    latencies per route) and as Prometheus collectors in their own ``registry``."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.batches: Counter[int] = Counter()
        self.latency: dict[str, deque[float]] = {}
        self.batcher_restarts = 0
        self.started = time.time()
        self.registry = CollectorRegistry()
        self._requests = PromCounter(
            "sidrec_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self._seconds = Histogram(
            "sidrec_request_seconds", "request latency", ["route"], registry=self.registry
        )
        buckets = (1, 2, 4, 8, 16, 32, 64, 128)
        self._batch = Histogram(
            "sidrec_batch_size", "requests per batch", buckets=buckets, registry=self.registry
        )
        self._restarts = PromCounter(
            "sidrec_batcher_restarts", "micro-batcher restarts", registry=self.registry
        )
        self._index = Histogram(
            "sidrec_index_seconds", "catalog growth by registered items", registry=self.registry
        )
        self.index_builds, self.index_seconds, self.reloads = 0, 0.0, 0

    def record(self, route: str, status: int, seconds: float) -> None:
        self.requests[route] += 1
        self.statuses[f"{route} {status}"] += 1
        self.latency.setdefault(route, deque(maxlen=10_000)).append(seconds * 1000)
        self._requests.labels(route, str(status)).inc()
        self._seconds.labels(route).observe(seconds)

    def batch(self, size: int) -> None:
        self.batches[size] += 1
        self._batch.observe(size)

    def indexed(self, items: int, seconds: float) -> None:
        """The catalog grew by ``items`` registered items, built in ``seconds``."""
        self.index_builds += 1
        self.index_seconds = round(seconds, 4)
        self._index.observe(seconds)

    def restarted(self) -> None:
        self.batcher_restarts += 1
        self._restarts.inc()

    def prometheus(self) -> bytes:
        """Every collector in Prometheus' text exposition format."""
        return generate_latest(self.registry)

    def summary(self) -> dict[str, Any]:
        sizes = np.repeat(list(self.batches), list(self.batches.values()))
        return {
            "uptime_seconds": round(time.time() - self.started, 1),
            "batcher_restarts": self.batcher_restarts,
            "index_builds": self.index_builds,
            "reloads": self.reloads,
            "last_index_seconds": self.index_seconds,
            "requests": dict(self.requests),
            "statuses": dict(self.statuses),
            "batches": {
                "count": int(sizes.size),
                "mean_size": round(float(sizes.mean()), 2) if sizes.size else None,
                "max_size": int(sizes.max()) if sizes.size else None,
                "sizes": {str(k): v for k, v in sorted(self.batches.items())},
            },
            "latency_ms": {
                route: {f"p{q}": round(float(np.percentile(list(ms), q)), 2) for q in (50, 95, 99)}
                for route, ms in self.latency.items()
                if ms
            },
        }


class MicroBatcher:
    """Runs ``fn`` over batches of submitted items on ``executor``: a batch starts with the
    first waiting item and takes whatever arrives within ``max_wait`` seconds, up to
    ``max_batch`` items (``max_batch=1``: every item alone). At most ``max_queue`` items wait
    (0 = no bound)."""

    def __init__(
        self,
        fn: Callable[[list[Any]], list[Any]],
        executor: ThreadPoolExecutor,
        max_batch: int,
        max_wait: float,
        on_batch: Callable[[int], None],
        max_queue: int = 0,
    ) -> None:
        self.fn, self.executor = fn, executor
        self.max_batch, self.max_wait, self.on_batch = max_batch, max_wait, on_batch
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future]] = asyncio.Queue(max_queue)

    async def submit(self, item: Any) -> Any:
        """``fn``'s result for ``item``; raises :class:`Overloaded` when the queue is full."""
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise Overloaded(
                f"{self.queue.maxsize} requests are waiting (serve.max_queue): retry shortly"
            ) from None
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - loop.time()
                try:
                    if left <= 0:
                        batch.append(self.queue.get_nowait())
                    else:
                        batch.append(await asyncio.wait_for(self.queue.get(), left))
                except (asyncio.QueueEmpty, TimeoutError):
                    break
            batch = [(x, f) for x, f in batch if not f.done()]  # past their deadline
            if not batch:
                continue
            self.on_batch(len(batch))
            try:
                results = await loop.run_in_executor(self.executor, self.fn, [x for x, _ in batch])
            except Exception as e:  # every request of a failed batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):  # this request's own error
                    future.set_exception(result)
                else:
                    future.set_result(result)
