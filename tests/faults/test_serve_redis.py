"""Fault injection for ``sidrec serve``: Redis is SIGKILLed while a replica takes registrations
and recommendations. Registrations get a clear 503, recommendations (the registered items
included) go on answering, and once Redis is back (its append-only file kept) registrations
succeed again with no SID allocated twice. A Redis that comes back empty is noticed: the
replica refuses to allocate rather than hand out SIDs a second time.

Run with ``pytest -m faults`` (``make test-faults``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import polars as pl
import pytest
import redis
from conftest import free_port, start_redis

pytestmark = pytest.mark.faults
TOKEN = "fault-suite-token"  # the replicas' write token (SIDREC_ADMIN_TOKEN)


def _replica(model: Path, url: str, logs: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "sidrec.app.cli", "serve", "--model", str(model)]
    with open(logs, "w") as log:
        proc = subprocess.Popen(
            [*args, "--port", str(port), "--redis-url", url]
            + [f"serve.registry_record={logs.with_suffix('.record.json')}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SIDREC_ADMIN_TOKEN": TOKEN},
        )
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the replica did not start: {logs.read_text()[-2000:]}")


def test_redis_killed_mid_run(demo_model: dict, tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = start_redis(tmp_path / "redis", port)
    proc, base = _replica(demo_model["model"], url, tmp_path / "replica.log")
    c = httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"})
    sids: dict[str, str] = {}  # source id -> SID, every registration that succeeded
    statuses: list[int] = []
    stop = threading.Event()

    def recommend_all_along() -> None:
        while not stop.is_set():
            statuses.append(c.post("/recommend", json={"history": [1, 2, 3], "k": 5}).status_code)

    titles = pl.read_parquet(demo_model["model"] / "items.parquet")["title"].to_list()

    def register(name: str) -> httpx.Response:
        title = f"{titles[7 * len(sids) + 3]} ({name})"  # spread over the prefixes
        r = c.post("/items", json={"source_id": name, "title": title})
        if r.status_code == 200:
            sids[name] = r.json()["sid"]
        return r

    background = threading.Thread(target=recommend_all_along)
    background.start()
    try:
        assert all(register(f"before-{i}").status_code == 200 for i in range(5))
        server.send_signal(signal.SIGKILL)
        server.wait()
        down = [register(f"during-{i}") for i in range(3)]
        assert {r.status_code for r in down} == {503}
        assert "unreachable" in down[0].json()["detail"]
        # known items, the registered ones too, are still recommended
        known = c.post("/recommend", json={"history": ["before-0", 4], "k": 5})
        assert known.status_code == 200 and len(known.json()["recommendations"]) == 5
        assert "unreachable" in c.get("/health").json()["registry_status"]

        pinned = dict(sids)  # what was handed out before the kill
        server = start_redis(tmp_path / "redis", port)  # the same append-only file
        again = register("before-2").json()  # (register() records it: compare with the pin)
        assert again["sid"] == pinned["before-2"] and again["created"] is False
        assert all(register(f"after-{i}").status_code == 200 for i in range(5))
        assert {k: sids[k] for k in pinned} == pinned  # every earlier SID kept
        assert c.get("/health").json()["registry_status"] == "ok"
        assert len(set(sids.values())) == len(sids) == 10  # no SID allocated twice

        # Redis back without its data: the replica refuses to allocate again
        redis.Redis.from_url(url).flushall()
        lost = register("after-lost")
        assert lost.status_code == 503 and "lost data" in lost.json()["detail"]
    finally:
        stop.set()
        background.join()
        proc.terminate()
        proc.wait()
        server.kill()
        server.wait()
    assert statuses and set(statuses) == {200}  # no recommendation failed throughout
