"""Load and faults of ``sidrec serve`` on loopback: two replicas over one real ``redis-server``.

It starts Debian's ``redis-server`` (append-only file on) on a free port and ``sidrec serve``
replicas of ``--model`` sharing it (``serve.threads=1`` each, one registry record file per
scenario, so a replica started later knows what was handed out). Scenarios, in order:

1. ``load_<mode>``, micro-batching on and off: ``--clients`` concurrent clients for
   ``--seconds``, each request a registration (new title, embedded by the model's text
   encoder) with probability ``--registration-share``, else a recommendation (a history from
   the model's training data), alternating between the replicas. Reported: requests/s,
   p50/p95/p99 per kind, statuses, micro-batch sizes.
2. ``redis_restart``: the same load while Redis is SIGKILLed and restarted from its
   append-only file: recommendations never fail; registrations get 503 while it is down and
   succeed again after.
3. ``redis_empty``: Redis restarted without its data: both replicas, and a third started
   afterwards, refuse to register (503), and over the whole log of the scenario no item id or
   SID was handed out twice.
4. ``duplicates``: 200 concurrent registrations of ``--distinct`` (100) source ids, each sent to
   both replicas: exactly 100 items, one id and one SID per source id, no SID twice.
5. ``overload``: replicas with ``serve.max_queue=4`` and no micro-batching under
   ``--clients`` clients: beyond the queue requests get 429 with Retry-After, none times out.

Prints one JSON object; ``ok`` is true when every check held.

    python benchmarks/serve_load.py --model outputs/demo/sft [--seconds 60] [--clients 64] \\
        [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import redis

from sidrec.core.manifest import git_commit, machine, print_report
from sidrec.serve.cli import histories
from sidrec.serve.service import TOKEN_ENV

# the replicas' write token, for this run only
TOKEN = "serve-load-benchmark"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODES = {"on": {"max_batch": 32, "max_wait_ms": 5.0}, "off": {"max_batch": 1}}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(check: Any, what: str, seconds: float = 120) -> None:
    end = time.time() + seconds
    while time.time() < end:
        try:
            if check():
                return
        except (httpx.HTTPError, redis.RedisError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {seconds:.0f} s")


class Redis:
    """A ``redis-server`` on ``port`` with its append-only file in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, empty: bool = False) -> None:
        if empty:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        _wait(redis.Redis.from_url(self.url).ping, "redis-server")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


class Replicas:
    """``sidrec serve`` replicas of ``model`` over one Redis, sharing a registry record."""

    def __init__(self, model: Path, url: str, folder: Path, settings: dict[str, Any]) -> None:
        self.model, self.url, self.folder, self.settings = model, url, folder, settings
        folder.mkdir(parents=True, exist_ok=True)
        self.procs: list[tuple[subprocess.Popen, str]] = []

    def start(self, n: int = 1) -> list[str]:
        started = []
        for _ in range(n):
            port = _port()
            args = [sys.executable, "-m", "sidrec.app.cli", "serve", "--model", str(self.model)]
            args += ["--port", str(port), "--redis-url", self.url, "serve.threads=1"]
            args += [f"serve.registry_record={self.folder / 'record.json'}"]
            args += [f"serve.{k}={v}" for k, v in self.settings.items()]
            log = open(self.folder / f"replica-{len(self.procs)}.log", "w")  # noqa: SIM115
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, TOKEN_ENV: TOKEN}
            )
            log.close()  # the child keeps its own handle
            base = f"http://127.0.0.1:{port}"
            self.procs.append((proc, base))
            started.append(base)
        for n, base in enumerate(started, start=len(self.procs) - len(started)):
            proc, log_file = self.procs[n][0], self.folder / f"replica-{n}.log"

            def up(b: str = base, p: subprocess.Popen = proc, f: Path = log_file) -> bool:
                if p.poll() is not None:
                    raise RuntimeError(f"replica {b} exited: {f.read_text()[-2000:]}")
                return httpx.get(f"{b}/health").status_code == 200

            _wait(up, f"replica {base}")
        return started

    @property
    def bases(self) -> list[str]:
        return [b for _, b in self.procs]

    def metrics(self) -> list[dict[str, Any]]:
        return [httpx.get(f"{b}/metrics", timeout=30).json() for b in self.bases]

    def stop(self) -> None:
        for proc, _ in self.procs:
            proc.terminate()
            proc.wait()


class Load:
    """Clients sending registrations and recommendations, every answer logged as
    ``(sent at, kind, status, ms, (body, headers))``."""

    def __init__(self, titles: list[str], users: list[list[int]], seed: int = 0) -> None:
        self.titles, self.users, self.rng = titles, users, random.Random(seed)
        self.log: list[tuple[float, str, int, float, Any]] = []
        self.errors: list[str] = []
        self.next_item = 0

    def body(self, kind: str, source: str | None = None) -> dict[str, Any]:
        if kind == "recommend":
            return {"history": self.rng.choice(self.users)[-20:], "k": 10}
        i, self.next_item = self.next_item, self.next_item + 1
        title = f"{self.titles[i % len(self.titles)]}, model {i}"
        return {"source_id": source or f"LOAD-{os.getpid()}-{i}", "title": title}

    async def send(self, client: httpx.AsyncClient, base: str, kind: str, body: dict) -> None:
        sent, start = time.time(), time.perf_counter()
        try:
            r = await client.post(f"{base}/{kind}", json=body)
        except httpx.HTTPError as e:  # a timeout or a dropped connection: a failure
            self.errors.append(f"{kind}: {type(e).__name__} {e}")
            return
        ms = (time.perf_counter() - start) * 1000
        json_body = r.headers.get("content-type", "").startswith("application/json")
        answer = r.json() if json_body else r.text
        self.log.append((sent, kind, r.status_code, ms, (answer, dict(r.headers))))

    async def run(self, bases: list[str], clients: int, seconds: float, share: float) -> float:
        """``clients`` loops for ``seconds``; returns the wall time."""
        end = time.perf_counter() + seconds

        async def loop(c: int, client: httpx.AsyncClient) -> None:
            n = c
            while time.perf_counter() < end:
                kind = "items" if self.rng.random() < share else "recommend"
                await self.send(client, bases[n % len(bases)], kind, self.body(kind))
                n += 1

        start = time.perf_counter()
        async with httpx.AsyncClient(timeout=60, headers=AUTH) as client:
            await asyncio.gather(*(loop(c, client) for c in range(clients)))
        return time.perf_counter() - start

    def of(self, kind: str, since: float = 0.0, until: float = float("inf")) -> list[tuple]:
        """The answers of ``kind`` sent at ``since`` or later and answered before ``until``."""
        return [
            e for e in self.log if e[1] == kind and since <= e[0] and e[0] + e[3] / 1000 < until
        ]


def _pct(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {}
    return {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)}


def _handed_out(log: list[tuple]) -> dict[str, Any]:
    """Over every successful registration: ids and SIDs handed to more than one source id."""
    by_id: dict[int, set] = {}
    by_sid: dict[str, set] = {}
    for _, kind, status, _, (body, _) in log:
        if kind == "items" and status == 200:
            by_id.setdefault(body["item_id"], set()).add(body["source_id"])
            by_sid.setdefault(body["sid"], set()).add(body["source_id"])
    return {
        "registered": len(by_id),
        "ids_handed_out_twice": sum(len(s) > 1 for s in by_id.values()),
        "sids_handed_out_twice": sum(len(s) > 1 for s in by_sid.values()),
    }


def _setup(ctx: dict, name: str, settings: dict[str, Any], seed: int) -> tuple[Replicas, Load]:
    """Two fresh replicas over an emptied Redis, with their own record, and a load generator."""
    redis.Redis.from_url(ctx["redis"].url).flushall()
    reps = Replicas(ctx["model"], ctx["redis"].url, ctx["tmp"] / name, settings)
    reps.start(2)
    return reps, Load(ctx["titles"], ctx["users"], seed=seed)


def scenario_load(ctx: dict, mode: str) -> dict[str, Any]:
    """Throughput and latency under the mixed load, micro-batching ``mode``."""
    reps, load = _setup(ctx, f"load-{mode}", MODES[mode], seed=0)
    try:
        wall = asyncio.run(load.run(reps.bases, ctx["clients"], ctx["seconds"], ctx["share"]))
        metrics = reps.metrics()
    finally:
        reps.stop()
    statuses = Counter(f"{k} {s}" for _, k, s, _, _ in load.log)
    ok = [e for e in load.log if e[2] == 200]
    return {
        "requests_per_second": round(len(ok) / wall, 1),
        "statuses": dict(statuses),
        "client_errors": len(load.errors),
        "latency_ms": {k: _pct([e[3] for e in ok if e[1] == k]) for k in ("recommend", "items")},
        "batch_size_mean": [m["batches"]["mean_size"] for m in metrics],
        "index_builds": [m.get("index_builds") for m in metrics],
        **_handed_out(load.log),
        # 409: the item's SID prefix is full, an answer (not a failure)
        "ok": not load.errors and {e[2] for e in load.log} <= {200, 409},
    }


def scenario_restart(ctx: dict) -> dict[str, Any]:
    """Redis SIGKILLed and restarted from its append-only file under load."""
    server = ctx["redis"]
    reps, load = _setup(ctx, "restart", MODES["on"], seed=1)
    marks: dict[str, float] = {}

    async def faults() -> None:
        await asyncio.sleep(ctx["seconds"] / 4)
        marks["killed"] = time.time()
        server.kill()
        await asyncio.sleep(ctx["seconds"] / 4)
        marks["restarting"] = time.time()  # Redis may answer from here on
        await asyncio.get_running_loop().run_in_executor(None, server.start)
        marks["restarted"] = time.time()

    async def both() -> None:
        await asyncio.gather(
            load.run(reps.bases, ctx["clients"], ctx["seconds"], ctx["share"] * 4), faults()
        )

    try:
        asyncio.run(both())
    finally:
        reps.stop()
    recs = load.of("recommend")
    down = load.of("items", marks["killed"] + 0.5, marks["restarting"])
    after = load.of("items", marks["restarted"] + 2)
    result = {
        "recommendations": len(recs),
        "recommendations_failed": sum(e[2] != 200 for e in recs) + len(load.errors),
        "redis_down_seconds": round(marks["restarting"] - marks["killed"], 1),
        "registrations_while_down": dict(Counter(e[2] for e in down)),
        "registrations_after_restart": dict(Counter(e[2] for e in after)),
        **_handed_out(load.log),
    }
    result["ok"] = (
        result["recommendations_failed"] == 0
        and set(result["registrations_while_down"]) <= {503}
        and set(result["registrations_after_restart"]) <= {200, 409}
        and result["registrations_after_restart"].get(200, 0) > 0
        and result["ids_handed_out_twice"] == result["sids_handed_out_twice"] == 0
    )
    return result


def scenario_empty(ctx: dict) -> dict[str, Any]:
    """Redis restarted without its data: every replica, a new one too, refuses to register."""
    server = ctx["redis"]
    reps, load = _setup(ctx, "empty", MODES["on"], seed=2)

    async def register(n: int, bases: list[str]) -> None:
        async with httpx.AsyncClient(timeout=60, headers=AUTH) as client:
            await asyncio.gather(
                *(
                    load.send(client, bases[i % len(bases)], "items", load.body("items"))
                    for i in range(n)
                )
            )

    try:
        asyncio.run(register(40, reps.bases))
        server.kill()
        server.start(empty=True)
        reps.start(1)  # a replica started afterwards, sharing the record
        refused_at = len(load.log)
        asyncio.run(register(30, reps.bases))
    finally:
        reps.stop()
    after = load.log[refused_at:]
    result = {
        "replicas": 3,
        "registered_before": sum(e[2] == 200 for e in load.log[:refused_at]),
        "after_empty_restart": dict(Counter(e[2] for e in after)),
        "refusals_name_lost_data": all("lost data" in str(e[4][0]) for e in after),
        **_handed_out(load.log),
    }
    result["ok"] = (
        result["registered_before"] == 40
        and set(result["after_empty_restart"]) == {503}
        and result["refusals_name_lost_data"]
        and result["ids_handed_out_twice"] == result["sids_handed_out_twice"] == 0
    )
    return result


def scenario_duplicates(ctx: dict) -> dict[str, Any]:
    """Concurrent registrations of ``distinct`` source ids, each twice (once per replica)."""
    n = ctx["distinct"]
    reps, load = _setup(ctx, "duplicates", MODES["on"], seed=3)

    async def register() -> None:
        async with httpx.AsyncClient(timeout=60, headers=AUTH) as client:
            sends = [
                load.send(client, reps.bases[i % 2], "items", load.body("items", f"DUP-{i // 2}"))
                for i in range(2 * n)
            ]
            await asyncio.gather(*sends)

    try:
        asyncio.run(register())
    finally:
        reps.stop()
    ok = [e[4][0] for e in load.log if e[2] == 200]
    ids = {(b["source_id"], b["item_id"], b["sid"]) for b in ok}
    result = {
        "answers_200": len(ok),
        "items": len({b["item_id"] for b in ok}),
        "distinct_sids": len({b["sid"] for b in ok}),
        "source_ids_with_one_item": sum(n == 1 for n in Counter(s for s, _, _ in ids).values()),
    }
    result["ok"] = (
        result["answers_200"] == 2 * n
        and result["items"] == result["distinct_sids"] == n
        and result["source_ids_with_one_item"] == n
    )
    return result


def scenario_overload(ctx: dict) -> dict[str, Any]:
    """A queue of 4 under ``clients`` concurrent recommendations: 429s, no timeouts."""
    settings = {"max_batch": 1, "max_queue": 4}
    reps, load = _setup(ctx, "overload", settings, seed=4)
    try:
        asyncio.run(load.run(reps.bases, ctx["clients"], min(ctx["seconds"], 20), 0.0))
    finally:
        reps.stop()
    statuses = Counter(e[2] for e in load.log)
    shed = [e for e in load.log if e[2] == 429]
    result = {
        "statuses": dict(statuses),
        "client_errors": len(load.errors),
        "retry_after_on_every_429": all("retry-after" in e[4][1] for e in shed),
        "latency_ms_429": _pct([e[3] for e in shed]),
    }
    result["ok"] = (
        set(statuses) <= {200, 429}
        and statuses[429] > 0
        and not load.errors
        and result["retry_after_on_every_429"]
    )
    return result


def run(
    model: Path, seconds: float = 60, clients: int = 64, share: float = 0.05, distinct: int = 100
) -> dict:
    """Every scenario; returns the report."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    items = pl.read_parquet(model / "items.parquet")
    users = [h for h in histories(None, model).values() if h] or [[i] for i in range(items.height)]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = Redis(Path(tmp) / "redis")
        server.start()
        ctx = {"model": model, "redis": server, "tmp": Path(tmp), "users": users}
        ctx.update(titles=items["title"].to_list(), seconds=seconds, clients=clients, share=share)
        ctx["distinct"] = distinct
        try:
            for mode in MODES:
                results[f"load_{mode}"] = scenario_load(ctx, mode)
            results["redis_restart"] = scenario_restart(ctx)
            results["redis_empty"] = scenario_empty(ctx)
            results["duplicates"] = scenario_duplicates(ctx)
            results["overload"] = scenario_overload(ctx)
        finally:
            server.kill()
    on, off = results["load_on"], results["load_off"]
    return {
        "benchmark": "serve_load",
        "machine": machine(),
        "git_commit": git_commit(),
        "settings": {
            "model": str(model),
            "items": items.height,
            "seconds": seconds,
            "clients": clients,
            "registration_share": share,
            "distinct_source_ids_registered_twice": distinct,
            "replicas": 2,
            "modes": MODES,
            "cpus": os.cpu_count(),
        },
        "results": results,
        "throughput_ratio_on_vs_off": round(
            on["requests_per_second"] / max(off["requests_per_second"], 1e-9), 2
        ),
        "ok": all(r["ok"] for r in results.values()),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("outputs/demo/sft"))
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--registration-share", type=float, default=0.05)
    p.add_argument("--distinct", type=int, default=100, help="source ids registered twice")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    a = p.parse_args(argv)
    print_report(run(a.model, a.seconds, a.clients, a.registration_share, a.distinct), a.out)


if __name__ == "__main__":
    sys.exit(main())
