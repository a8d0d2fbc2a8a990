"""Load test of ``sidrec serve`` on loopback: two replicas, one Redis, micro-batching on and off.

It starts Debian's ``redis-server`` on a free port and, per mode, two ``sidrec serve``
replicas of ``--model`` sharing it (``serve.threads=1`` each). Then ``--registrations`` item
registrations (new titles, embedded by the model's text encoder) and ``--requests``
recommendation requests (histories from the model's training data) are sent in one shuffled
stream, ``--concurrency`` at a time, alternating between the replicas. Checked: no request
fails, every registered item gets a distinct SID, every recommended item is a catalog item
(a model item or a registered one) with its own SID. Reported per mode: requests/s, p50 / p95 /
p99 latency of each kind, and the replicas' micro-batch sizes. Redis is emptied between modes.

Prints one JSON object.

    python benchmarks/serve_load.py --model outputs/demo/sft [--registrations 200] \\
        [--requests 1000] [--concurrency 32] [--out FILE]
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
MODES = {"micro_batching_on": {"max_batch": 32, "max_wait_ms": 5.0}, "off": {"max_batch": 1}}


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
        except (httpx.HTTPError, redis.ConnectionError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {seconds:.0f} s")


def _replicas(model: Path, url: str, mode: dict[str, Any], logs: Path) -> list[tuple]:
    procs = []
    for r in range(2):
        port = _port()
        args = [sys.executable, "-m", "sidrec.app.cli", "serve", "--model", str(model)]
        args += ["--port", str(port), "--redis-url", url, "serve.threads=1"]
        args += [f"serve.{k}={v}" for k, v in mode.items()]
        env = {**os.environ, TOKEN_ENV: TOKEN}
        with open(logs / f"replica-{r}.log", "w") as log:  # the child keeps its own handle
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        procs.append((proc, f"http://127.0.0.1:{port}"))
    for _, base in procs:
        _wait(lambda b=base: httpx.get(f"{b}/health").status_code == 200, f"replica {base}")
    return procs


async def _load(
    bases: list[str], titles: list[str], users: list[list[int]], n_reg: int, n_rec: int, conc: int
) -> dict[str, Any]:
    rng = random.Random(0)
    tasks = [("items", i) for i in range(n_reg)] + [("recommend", i) for i in range(n_rec)]
    rng.shuffle(tasks)
    gate = asyncio.Semaphore(conc)
    out: dict[str, list] = {"items": [], "recommend": []}
    failures: list[str] = []

    async def one(client: httpx.AsyncClient, kind: str, i: int, n: int) -> None:
        base = bases[n % len(bases)]
        if kind == "items":
            body = {"source_id": f"LOAD-{i}", "title": f"{titles[i % len(titles)]}, model {i}"}
        else:
            body = {"history": users[i % len(users)][-20:], "k": 10}
        async with gate:
            start = time.perf_counter()
            r = await client.post(f"{base}/{kind}", json=body)
            ms = (time.perf_counter() - start) * 1000
        if r.status_code != 200:
            failures.append(f"{kind} {r.status_code} {r.text[:200]}")
            return
        out[kind].append((ms, r.json()))

    start = time.perf_counter()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(timeout=120, headers=auth) as client:
        await asyncio.gather(*(one(client, k, i, n) for n, (k, i) in enumerate(tasks)))
    return {"seconds": time.perf_counter() - start, "failures": failures, **out}


def _pct(ms: list[float]) -> dict[str, float]:
    return {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)}


def run(
    model: Path, registrations: int = 200, requests: int = 1000, concurrency: int = 32
) -> dict[str, Any]:
    """Both modes; returns the report."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    items = pl.read_parquet(model / "items.parquet")
    sids = pl.read_parquet(model / "sids" / "sids.parquet")["sid"].to_list()
    users = [h for h in histories(None, model).values() if h] or [[i] for i in range(items.height)]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        port = _port()
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        try:
            _wait(client.ping, "redis-server")
            for name, mode in MODES.items():
                client.flushall()
                procs = _replicas(model, url, mode, Path(tmp))
                try:
                    got = asyncio.run(
                        _load(
                            [b for _, b in procs],
                            items["title"].to_list(),
                            users,
                            registrations,
                            requests,
                            concurrency,
                        )
                    )
                    metrics = [httpx.get(f"{b}/metrics").json() for _, b in procs]
                finally:
                    for proc, _ in procs:
                        proc.terminate()
                        proc.wait()
                results[name] = _summary(got, metrics, sids, registrations, requests)
        finally:
            server.kill()
            server.wait()
    on, off = results["micro_batching_on"], results["off"]
    return {
        "benchmark": "serve_load",
        "machine": machine(),
        "git_commit": git_commit(),
        "settings": {
            "model": str(model),
            "items": items.height,
            "registrations": registrations,
            "requests": requests,
            "concurrency": concurrency,
            "replicas": 2,
            "modes": MODES,
            "cpus": os.cpu_count(),
        },
        "results": results,
        "throughput_ratio_on_vs_off": round(
            on["requests_per_second"] / off["requests_per_second"], 2
        ),
    }


def _summary(
    got: dict[str, Any], metrics: list[dict], sids: list[str], n_reg: int, n_rec: int
) -> dict[str, Any]:
    registered = {r["item_id"]: r["sid"] for _, r in got["items"]}
    catalog = {**dict(enumerate(sids)), **registered}
    recs = [x for _, r in got["recommend"] for x in r["recommendations"]]
    return {
        "failures": len(got["failures"]),
        "failure_examples": got["failures"][:5],
        "registered": len(registered),
        "distinct_sids": len(set(registered.values())),
        "sids_clash_with_model_items": len(set(registered.values()) & set(sids)),
        "recommended_items": len(recs),
        "recommended_outside_catalog": sum(catalog.get(x["item_id"]) != x["sid"] for x in recs),
        "recommended_registered_items": sum(x["item_id"] in registered for x in recs),
        "seconds": round(got["seconds"], 2),
        "requests_per_second": round((n_reg + n_rec) / got["seconds"], 1),
        "latency_ms": {
            "recommend": _pct([ms for ms, _ in got["recommend"]]),
            "items": _pct([ms for ms, _ in got["items"]]),
        },
        "batch_size_mean": [m["batches"]["mean_size"] for m in metrics],
        "batch_size_max": [m["batches"]["max_size"] for m in metrics],
        "replica_items": [m["items"] for m in metrics],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("outputs/demo/sft"))
    p.add_argument("--registrations", type=int, default=200)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--out", type=Path, help="also write the JSON here")
    a = p.parse_args(argv)
    print_report(run(a.model, a.registrations, a.requests, a.concurrency), a.out)


if __name__ == "__main__":
    sys.exit(main())
