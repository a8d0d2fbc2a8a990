"""``sidrec serve``: recommendations over HTTP, items registered at runtime recommendable by the
next request on every replica, the SID registry in memory and in a real Redis (atomic,
idempotent, bounded per prefix), micro-batching that does not change answers, and 4xx/503
answers that name the problem."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from sidrec.app.cli import main
from sidrec.core.config import model_config
from sidrec.core.embeddings import load_embeddings
from sidrec.core.errors import SidrecError
from sidrec.core.io import read_json
from sidrec.core.sids import parse_sid, sid_string
from sidrec.serve.cli import load_service
from sidrec.serve.service import TOKEN_ENV, Service, create_app

TOKEN = "test-write-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def _write_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def _client(svc: Service) -> TestClient:
    """A client that sends the write token."""
    return TestClient(create_app(svc), headers=AUTH)


def _service(demo_model: dict, *overrides: str) -> Service:
    # a record of its own: the model directory's would carry over to the next test's Redis
    record = Path(tempfile.mkdtemp()) / "registry.json"
    over = ["serve.num_beams=200", f"serve.registry_record={record}", *overrides]
    cfg = model_config(demo_model["model"], None, over)
    return load_service(cfg, demo_model["model"], None, None)


def _embedding(demo_model: dict, item: int) -> list[float]:
    return load_embeddings(demo_model["outputs"]["embeddings"])[item].tolist()


def test_registered_items_are_recommendable_at_once_and_bad_input_is_refused(
    demo_model: dict,
) -> None:
    svc = _service(demo_model, "serve.registry=memory")
    n = len(svc.rec.titles)
    user = next(iter(svc.histories))
    with _client(svc) as c:
        # 200 beams over a 150-item catalog: every item is in the list, new ones too
        first = c.post("/recommend", json={"history": [3, 7], "k": 200}).json()["recommendations"]
        assert sorted(r["item_id"] for r in first) == list(range(n))
        by_user = c.post("/recommend", json={"user_id": user, "k": 5})
        assert by_user.status_code == 200 and len(by_user.json()["recommendations"]) == 5
        got = c.post("/items", json={"source_id": "NEW-1", "title": "Cordless drill, 18 V"}).json()
        assert got["item_id"] == n and got["created"] and parse_sid(got["sid"])
        assert got["sid"] not in {r["sid"] for r in first}
        again = c.post("/items", json={"source_id": "NEW-1", "title": "other"}).json()
        assert again == {**got, "created": False}  # idempotent: the same SID back
        # an item of the model's own catalog registered again is that item
        own = c.post("/items", json={"source_id": svc.rec.sources[4]}).json()
        assert own["item_id"] == 4 and not own["created"]
        after = c.post("/recommend", json={"history": [3, 7], "k": 200}).json()
        items = after["recommendations"]
        assert sorted(r["item_id"] for r in items) == list(range(n + 1))
        assert next(r for r in items if r["item_id"] == n)["source_id"] == "NEW-1"
        # the new item can be in a history, by source id
        assert c.post("/recommend", json={"history": ["NEW-1"], "k": 3}).status_code == 200
        # an item given as an embedding gets the prefix the frozen quantizer gives it
        vector = _embedding(demo_model, 5)
        close = c.post("/items", json={"source_id": "NEW-2", "embedding": vector}).json()
        want = svc.alloc.frozen.ranked_last(np.array([vector]), "x")[0][0].tolist()
        assert parse_sid(close["sid"])[:2] == want

        bad = {
            "unknown item": ({"history": [n + 5]}, 422, "unknown item ids"),
            "k above beams": ({"history": [1], "k": 201}, 422, "serve.num_beams"),
            "both": ({"history": [1], "user_id": user}, 422, "exactly one"),
            "neither": ({"k": 3}, 422, "exactly one"),
            "unknown user": ({"user_id": "nobody"}, 404, "unknown user_id 'nobody'"),
            "k zero": ({"history": [1], "k": 0}, 422, "greater than or equal to 1"),
        }
        for case, (body, status, text) in bad.items():
            r = c.post("/recommend", json=body)
            assert r.status_code == status and text in r.text, case
        malformed = c.post(
            "/recommend", content=b'{"history": [1', headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 422 and "json" in malformed.text.lower()
        wrong_dim = c.post("/items", json={"source_id": "NEW-3", "embedding": [0.1, 0.2]})
        assert wrong_dim.status_code == 422 and "dimension" in wrong_dim.text
        assert c.post("/items", json={"source_id": "NEW-4"}).status_code == 422  # no text
        assert c.post("/items", json={"title": "no source id"}).status_code == 422
        # nothing was lost to the refused requests
        assert svc.known == 2 and len(svc.rec.titles) == n + 2
        health = c.get("/health").json()
        assert health["registry_status"] == "ok" and health["items"] == n + 2
        metrics = c.get("/metrics").json()
        assert (
            metrics["requests"]["/recommend"] == 11 and metrics["statuses"]["/recommend 404"] == 1
        )
        # the unknown item's and unknown user's requests reached the worker too: both resolve
        # there, after syncing (a user's history includes its recorded interactions)
        assert metrics["batches"]["count"] == 6
        assert set(metrics["latency_ms"]["/recommend"]) == {"p50", "p95", "p99"}


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_full_prefix_is_refused(demo_model: dict, redis_url: str, kind: str) -> None:
    svc = _service(demo_model, f"serve.registry={kind}", f"serve.redis_url={redis_url}")
    item = 11 if kind == "memory" else 12
    vector = _embedding(demo_model, item)
    prefix = tuple(svc.alloc.frozen.ranked_last(np.array([vector]), "x")[0][0].tolist())
    held = svc.alloc.base_per_prefix[sid_string(prefix)]
    svc.alloc.capacity = held + 2
    with _client(svc) as c:
        sids = [
            c.post("/items", json={"source_id": f"{kind}-{i}", "embedding": vector}).json()["sid"]
            for i in range(2)
        ]
        assert len(set(sids)) == 2 and all(tuple(parse_sid(s)[:2]) == prefix for s in sids)
        full = c.post("/items", json={"source_id": f"{kind}-2", "embedding": vector})
        assert full.status_code == 409 and "is full" in full.text


def test_replicas_share_one_redis_registry(demo_model: dict, redis_url: str) -> None:
    a, b = (_service(demo_model, f"serve.redis_url={redis_url}") for _ in range(2))
    n = len(a.rec.titles)
    # embeddings of ten items that code to ten prefixes with room for three more items each
    vectors, seen = [], set()
    for x in load_embeddings(demo_model["outputs"]["embeddings"]):
        prefix = sid_string(a.alloc.frozen.ranked_last(x[None], "x")[0][0].tolist())
        if prefix not in seen and a.alloc.base_per_prefix[prefix] <= 4:
            seen.add(prefix)
            vectors.append(x)
    assert len(vectors) >= 10
    with _client(a) as ca, _client(b) as cb:
        results: list[dict[str, Any]] = []

        def register(i: int) -> None:
            client = ca if i % 2 else cb
            body = {"source_id": f"shared-{i}", "embedding": vectors[i % 10].tolist()}
            results.append(client.post("/items", json=body).json())

        threads = [threading.Thread(target=register, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sids = [r["sid"] for r in results]
        assert len(set(sids)) == 30 and not set(sids) & set(a.rec.sids[:n])
        assert sorted(r["item_id"] for r in results) == list(range(n, n + 30))
        # each replica recommends what the other registered once it has looked at the
        # registry (at its next request) and indexed the items (aside, while serving on)
        for svc, client in ((a, ca), (b, cb)):
            client.post("/recommend", json={"history": [1], "k": 1})
            svc.wait_indexed(svc.known)
            ranked = client.post("/recommend", json={"history": [1], "k": 180}).json()
            assert {r["item_id"] for r in ranked["recommendations"]} == set(range(n + 30))
        # the same source id on the other replica: the same SID back
        first = next(r for r in results if r["source_id"] == "shared-3")
        again = cb.post("/items", json={"source_id": "shared-3", "title": "x"}).json()
        assert (again["sid"], again["created"]) == (first["sid"], False)
    assert a.rec.sids == b.rec.sids


def test_micro_batches_give_the_answers_of_single_requests(demo_model: dict) -> None:
    # 20 beams over 150 items: a search that pruned by batch would show
    svc = _service(
        demo_model, "serve.registry=memory", "serve.max_wait_ms=50", "serve.num_beams=20"
    )
    histories = [[i, (i * 7) % 150, (i * 13) % 150] for i in range(12)]
    app = create_app(svc)

    async def ask() -> list[Any]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                got = await asyncio.gather(
                    *(c.post("/recommend", json={"history": h, "k": 5}) for h in histories)
                )
        return [r.json()["recommendations"] for r in got]

    answers = asyncio.run(ask())
    assert max(svc.metrics.batches) > 1  # requests were decoded together
    for history, answer in zip(histories, answers, strict=True):
        alone = svc.rec.recommend([history], 20, 1)[0][:5]
        assert [r["item_id"] for r in answer] == [r["item_id"] for r in alone]
        assert np.allclose([r["score"] for r in answer], [r["score"] for r in alone], atol=1e-4)


def test_serve_refuses_an_unreachable_redis(demo_model: dict, capsys: Any) -> None:
    from conftest import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(SidrecError, match="--registry memory"):
        _service(demo_model, f"serve.redis_url={url}")
    assert main(["serve", "--model", str(demo_model["model"]), "--redis-url", url]) == 2
    assert "is unreachable" in capsys.readouterr().err
    assert main(["serve"]) == 2


def test_service_settings_are_checked(demo_model: dict) -> None:
    for bad, match in (
        ("serve.max_batch=0", "serve.max_batch"),
        ("serve.prefix_capacity=9", "serve.prefix_capacity"),
        ("serve.registry=disk", "redis or memory"),
    ):
        with pytest.raises(SidrecError, match=match):
            _service(demo_model, "serve.registry=memory", bad)
    assert Path(demo_model["model"] / "sids" / "codebooks.npz").exists()


def test_writes_need_the_token_and_a_read_only_replica_refuses_them(
    demo_model: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"source_id": "W-1", "title": "Cordless drill"}
    svc = _service(demo_model, "serve.registry=memory")
    with TestClient(create_app(svc)) as c:
        missing = c.post("/items", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        for header in ("Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x"):
            assert c.post("/items", json=body, headers={"Authorization": header}).status_code in (
                401,
                403,
            )
        assert svc.known == 0  # nothing was registered
        assert c.post("/items", json=body, headers=AUTH).status_code == 200
        assert c.post("/recommend", json={"history": [1, 2], "k": 3}).status_code == 200  # reads
    # no token configured: writes are off (secure by default); a token file works instead
    monkeypatch.delenv(TOKEN_ENV)
    with TestClient(create_app(_service(demo_model, "serve.registry=memory"))) as c:
        off = c.post("/items", json=body, headers=AUTH)
        assert off.status_code == 403 and TOKEN_ENV in off.json()["detail"]
    (tmp_path / "token").write_text("from-a-file\n")
    filed = _service(
        demo_model, "serve.registry=memory", f"serve.admin_token_file={tmp_path}/token"
    )
    with TestClient(create_app(filed)) as c:
        ok = c.post("/items", json=body, headers={"Authorization": "Bearer from-a-file"})
        assert ok.status_code == 200 and TOKEN not in ok.text
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with _client(_service(demo_model, "serve.registry=memory", "serve.read_only=true")) as c:
        refused = c.post("/items", json=body)
        assert refused.status_code == 403 and "read-only" in refused.json()["detail"]


def test_redis_credentials_never_reach_a_response_or_the_console(
    demo_model: dict, capsys: Any
) -> None:
    from conftest import free_port

    from sidrec.serve.registry import RedisRegistry

    url = f"redis://user:PASSWORD@127.0.0.1:{free_port()}/0"
    assert main(["serve", "--model", str(demo_model["model"]), "--redis-url", url]) == 2
    err = capsys.readouterr().err
    assert "is unreachable" in err and "PASSWORD" not in err and "***@127.0.0.1" in err
    # a replica whose Redis went away: the 503, /health and /metrics hold no password
    svc = _service(demo_model, "serve.registry=memory")
    svc.registry = RedisRegistry(url, svc.n_base, "test")
    with _client(svc) as c:
        down = c.post("/items", json={"source_id": "R-1", "title": "drill"})
        assert down.status_code == 503 and "unreachable" in down.json()["detail"]
        shown = [down.text, c.get("/health").text, c.get("/metrics").text]
    assert all("PASSWORD" not in t and "user:" not in t for t in shown)


def test_a_dead_batcher_is_restarted_not_left_hanging(
    demo_model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sidrec.serve.batching import MicroBatcher

    real, started = MicroBatcher.run, []

    async def dies_first(self: MicroBatcher) -> None:
        started.append(1)
        if len(started) == 1:
            raise RuntimeError("the batcher died")
        await real(self)

    monkeypatch.setattr(MicroBatcher, "run", dies_first)
    with _client(_service(demo_model, "serve.registry=memory")) as c:
        answer = c.post("/recommend", json={"history": [1, 2], "k": 3})
        assert answer.status_code == 200 and len(answer.json()["recommendations"]) == 3
        assert c.get("/metrics").json()["batcher_restarts"] == 1 and len(started) == 2


def test_a_history_may_name_an_item_another_replica_just_registered(demo_model: dict) -> None:
    a = _service(demo_model, "serve.registry=memory")
    b = _service(demo_model, "serve.registry=memory")
    b.registry = a.registry  # one registry, two replicas (Redis in production)
    with _client(a) as ca, _client(b) as cb:
        got = ca.post("/items", json={"source_id": "FRESH-1", "title": "Cordless drill"}).json()
        answer = cb.post("/recommend", json={"history": ["FRESH-1", 3], "k": 5})
        assert answer.status_code == 200, answer.text  # b synced before resolving the history
        assert b.rec.by_source["FRESH-1"] == got["item_id"]
        unknown = cb.post("/recommend", json={"history": ["NEVER-SEEN"], "k": 5})
        assert unknown.status_code == 422 and "NEVER-SEEN" in unknown.json()["detail"]


@pytest.mark.parametrize(
    "error", ["OOM command not allowed", "MISCONF snapshots", "READONLY replica", "NOAUTH"]
)
def test_any_redis_error_leaves_recommendations_running(demo_model: dict, error: str) -> None:
    import redis

    from sidrec.serve.registry import RedisRegistry

    svc = _service(demo_model, "serve.registry=memory")
    svc.registry = RedisRegistry("redis://127.0.0.1:6379/0", svc.n_base, "test")

    def fails(*args: object, **kwargs: object) -> None:
        raise redis.ResponseError(error)

    for name in ("get", "lrange", "ping"):
        setattr(svc.registry.client, name, fails)
    svc.registry.script = svc.registry.epoch_script = fails
    with _client(svc) as c:
        assert c.post("/recommend", json={"history": [1, 2], "k": 3}).status_code == 200
        down = c.post("/items", json={"source_id": "R-2", "title": "drill"})
        assert down.status_code == 503 and error in down.json()["detail"]
        assert c.post("/recommend", json={"history": [4], "k": 3}).status_code == 200
        assert error in c.get("/health").json()["registry_status"]


def test_requests_are_bounded_and_overload_is_shed_with_429(
    demo_model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = _service(
        demo_model, "serve.registry=memory", "serve.max_history=5", "serve.max_body_bytes=2000"
    )
    with _client(svc) as c:
        long = c.post("/recommend", json={"history": list(range(6)), "k": 3})
        assert long.status_code == 422 and "serve.max_history=5" in long.json()["detail"]
        big = c.post("/items", json={"source_id": "B-1", "title": "x" * 3000})
        assert big.status_code == 413 and svc.known == 0
        huge = c.post("/items", json={"source_id": "B-2", "description": "y" * 20_000})
        assert huge.status_code in (413, 422)
        for i in range(20):  # random paths share one metrics label
            assert c.get(f"/no/such/path/{i}").status_code == 404
        shown = c.get("/metrics").json()
        # (with the two bodies refused before routing)
        assert shown["requests"]["unmatched"] == 22 and not any(
            "/no/" in k for k in shown["requests"]
        )
    # a full queue answers 429 with Retry-After at once instead of waiting
    svc = _service(demo_model, "serve.registry=memory", "serve.max_queue=1", "serve.max_batch=1")
    release = threading.Event()
    slow = svc.recommend_batch

    def stalled(batch: list) -> list:
        release.wait(30)
        return slow(batch)

    monkeypatch.setattr(svc, "recommend_batch", stalled)
    app = create_app(svc)

    async def flood() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            async with app.router.lifespan_context(app):
                body = {"history": [1, 2], "k": 3}
                tasks = [
                    asyncio.create_task(client.post("/recommend", json=body)) for _ in range(6)
                ]
                await asyncio.sleep(0.5)
                release.set()
                return await asyncio.gather(*tasks)

    answers = asyncio.run(flood())
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) >= 1 and 429 in codes and set(codes) <= {200, 429}
    shed = next(r for r in answers if r.status_code == 429)
    assert shed.headers["retry-after"] == "1" and "serve.max_queue" in shed.json()["detail"]


def test_ready_and_prometheus_metrics(demo_model: dict) -> None:
    from conftest import free_port

    from sidrec.serve.registry import RedisRegistry

    svc = _service(demo_model, "serve.registry=memory")
    with _client(svc) as c:
        assert c.get("/ready").json() == {"ready": True, "problems": []}
        assert c.post("/recommend", json={"history": [1, 2], "k": 3}).status_code == 200
        text = c.get("/metrics", headers={"Accept": "text/plain"})
        assert text.headers["content-type"].startswith("text/plain")
        body = text.text
        assert "# TYPE sidrec_requests_total counter" in body
        assert 'sidrec_requests_total{route="/recommend",status="200"} 1.0' in body
        assert (
            "# TYPE sidrec_batch_size histogram" in body and "sidrec_batch_size_count 1.0" in body
        )
        assert c.get("/metrics").json()["requests"]["/recommend"] == 1  # JSON by default
    # a registry that cannot be reached: alive (/health 200) but not ready (503, saying why)
    svc.registry = RedisRegistry(f"redis://127.0.0.1:{free_port()}/0", svc.n_base, "test")
    with _client(svc) as c:
        assert c.get("/health").status_code == 200
        not_ready = c.get("/ready")
        assert not_ready.status_code == 503 and "unreachable" in not_ready.json()["problems"][0]


def test_exclude_history_drops_the_histories_items_as_evaluation_does(demo_model: dict) -> None:
    svc = _service(demo_model, "serve.registry=memory", "serve.num_beams=150")
    with _client(svc) as c:
        ask = {"history": [5, 9, 12], "k": 150}
        kept = c.post("/recommend", json={**ask, "exclude_history": False}).json()
        left_out = c.post("/recommend", json={**ask, "exclude_history": True}).json()
    kept_ids = [r["item_id"] for r in kept["recommendations"]]
    assert {5, 9, 12} <= set(kept_ids)  # every item ranked: the history's among them
    assert [r["item_id"] for r in left_out["recommendations"]] == [
        i for i in kept_ids if i not in {5, 9, 12}
    ]


def test_a_registry_that_lost_data_is_refused_by_every_replica_a_new_one_too(
    demo_model: dict, redis_url: str, tmp_path: Path
) -> None:
    import redis

    record = tmp_path / "registry.json"
    over = [f"serve.redis_url={redis_url}", f"serve.registry_record={record}"]
    old = _service(demo_model, *over)
    vector = _embedding(demo_model, 20)
    with _client(old) as c:
        for i in range(2):
            assert c.post("/items", json={"source_id": f"L-{i}", "embedding": vector}).is_success
    assert read_json(record)["count"] == 2
    redis.Redis.from_url(redis_url).flushall()  # Redis restarted without its data
    # a replica without the record (another host) registers 3 items on the empty Redis
    stranger = _service(demo_model, f"serve.redis_url={redis_url}")
    with _client(stranger) as c:
        for i in range(3):
            assert c.post("/items", json={"source_id": f"S-{i}", "embedding": vector}).is_success
    # the replica that stayed up, and one started afterwards, refuse: fewer items than handed
    # out, then another epoch (3 items now, but not the same ones)
    fresh = _service(demo_model, *over)
    for svc in (old, fresh):
        with _client(svc) as c:
            refused = c.post("/items", json={"source_id": "L-9", "embedding": vector})
            assert refused.status_code == 503 and "lost data" in refused.json()["detail"]
            assert c.post("/recommend", json={"history": [1], "k": 3}).status_code == 200
            ready = c.get("/ready")
            assert ready.status_code == 503 and "lost data" in str(ready.json()["problems"])
    assert len(fresh.rec.titles) == 150  # it took none of the stranger's items


def test_indexing_a_registered_item_does_not_stall_recommendations(demo_model: dict) -> None:
    import time

    svc = _service(demo_model, "serve.registry=memory")
    building, slow = threading.Event(), svc.rec.ranker.grown

    def grown(table: Any) -> Any:  # an index that takes 3 s to build (a large catalog)
        building.set()
        time.sleep(3)
        return slow(table)

    svc.rec.ranker.grown = grown
    with _client(svc) as c:
        body = {"source_id": "BIG-1", "embedding": _embedding(demo_model, 30)}
        registration = threading.Thread(target=lambda: c.post("/items", json=body))
        registration.start()
        assert building.wait(10)
        start = time.perf_counter()
        answer = c.post("/recommend", json={"history": [1, 2], "k": 5})
        # served by the catalog as it was, while the index grows aside
        assert answer.status_code == 200 and time.perf_counter() - start < 2
        assert building.is_set() and registration.is_alive()
        registration.join()
        # the registration returned once the item was recommendable here
        ranked = c.post("/recommend", json={"history": [1], "k": 151}).json()["recommendations"]
        assert 150 in {r["item_id"] for r in ranked}
        assert c.get("/metrics").json()["index_builds"] == 1


def test_request_ids_versions_access_log_and_deadline(
    demo_model: dict, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import logging
    import time

    svc = _service(demo_model, "serve.registry=memory", "serve.deadline_ms=200")
    run_id = read_json(demo_model["model"] / "manifest.json")["run_id"]
    caplog.set_level(logging.INFO, logger="sidrec.access")
    with _client(svc) as c:
        r = c.post("/recommend", json={"history": [1], "k": 3}, headers={"X-Request-ID": "abc-1"})
        assert r.headers["X-Request-ID"] == "abc-1" and r.headers["X-Sidrec-Model"] == run_id
        assert (r.json()["model"], r.json()["catalog_version"]) == (run_id, 150)
        assert r.headers["X-Sidrec-Catalog"] == "150"
        bad = c.get("/health", headers={"X-Request-ID": "x" * 500})
        assert len(bad.headers["X-Request-ID"]) == 32  # not echoed: a new one
        made = c.post("/items", json={"source_id": "V-1", "title": "a lamp"})
        assert made.json()["catalog_version"] == 151 == int(made.headers["X-Sidrec-Catalog"])
        # a decode slower than the deadline: 504, and the service serves on
        fast = svc.rec.recommend
        svc.rec.recommend = lambda *a, **k: (time.sleep(0.5), fast(*a, **k))[1]
        late = c.post("/recommend", json={"history": [1], "k": 3})
        assert late.status_code == 504 and "deadline_ms" in late.json()["detail"]
        svc.rec.recommend = fast
        time.sleep(0.5)
        assert c.post("/recommend", json={"history": [2], "k": 3}).status_code == 200
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sidrec.access"]
    assert [x["status"] for x in lines] == [200, 200, 200, 504, 200]
    assert lines[0]["request_id"] == "abc-1" and lines[2]["route"] == "/items"
    assert not any(TOKEN in r.getMessage() for r in caplog.records)  # no secret logged


def test_deactivated_items_are_never_recommended_nor_their_sids_reused(
    demo_model: dict, redis_url: str
) -> None:
    a, b = (_service(demo_model, f"serve.redis_url={redis_url}") for _ in range(2))
    vector = _embedding(demo_model, 25)
    base_item = a.rec.sources[7]
    with _client(a) as ca, _client(b) as cb:
        made = ca.post("/items", json={"source_id": "GONE-1", "embedding": vector}).json()
        gone = ca.delete("/items/GONE-1")
        assert gone.status_code == 200 and gone.json() == {
            "item_id": made["item_id"],
            "source_id": "GONE-1",
            "active": False,
            "changed": True,
        }
        assert ca.delete("/items/GONE-1").json()["changed"] is False
        assert ca.delete(f"/items/{base_item}").json()["item_id"] == 7  # a base item too
        assert ca.delete("/items/NEVER").status_code == 404
        assert cb.delete("/items/GONE-1", headers={"Authorization": ""}).status_code == 401
        for c, svc in ((ca, a), (cb, b)):  # on every replica, from its next batch on
            c.post("/recommend", json={"history": [1], "k": 1})
            svc.wait_indexed(svc.known)
            got = c.post("/recommend", json={"history": [1], "k": 200}).json()["recommendations"]
            ids = {r["item_id"] for r in got}
            assert made["item_id"] not in ids and 7 not in ids and len(ids) == 149
        # its source id still names it; its SID is never handed to another item
        again = cb.post("/items", json={"source_id": "GONE-1", "title": "x"}).json()
        assert (again["item_id"], again["created"]) == (made["item_id"], False)
        other = cb.post("/items", json={"source_id": "NEW-2", "embedding": vector}).json()
        assert other["sid"] != made["sid"] and other["item_id"] == made["item_id"] + 1


def test_recorded_interactions_grow_a_users_history_on_every_replica(
    demo_model: dict, redis_url: str
) -> None:
    a, b = (_service(demo_model, f"serve.redis_url={redis_url}") for _ in range(2))
    user = next(iter(a.histories))
    with _client(a) as ca, _client(b) as cb:
        assert cb.post("/recommend", json={"user_id": "newcomer", "k": 3}).status_code == 404
        r = ca.post("/interactions", json={"user_id": "newcomer", "items": [4, a.rec.sources[9]]})
        assert r.status_code == 200 and r.json()["recorded"] == 2
        assert cb.post("/recommend", json={"user_id": "newcomer", "k": 3}).status_code == 200
        assert b.user_history("newcomer") == [4, 9]
        ca.post("/interactions", json={"user_id": user, "items": [11]})
        assert b.user_history(user) == [*a.histories[user], 11]
        bad = ca.post("/interactions", json={"user_id": user, "items": ["NOPE"]})
        assert bad.status_code == 422 and "NOPE" in bad.json()["detail"]
        unauthorized = cb.post(
            "/interactions", json={"user_id": user, "items": [1]}, headers={"Authorization": ""}
        )
        assert unauthorized.status_code == 401
