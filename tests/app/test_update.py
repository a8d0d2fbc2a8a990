"""``sidrec update``: new items coded by the frozen quantizer (existing SIDs never move), the
serving model promoted only when the metric holds, a rejected day backlogged and merged by the
next promotion, a ledger of every decision, the state untouched by an interrupted update, and
bad day directories refused naming the file and the row."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from sidrec.app.cli import main
from sidrec.app.update import LEDGER_COLUMNS, run_update
from sidrec.core.config import model_config
from sidrec.core.errors import SidrecError
from sidrec.core.io import read_json
from sidrec.core.sids import read_sid_dir
from sidrec.core.state import STATE_FILE, serving
from sidrec.serve.cli import load_service


def _day(root: Path, name: str, demo_model: dict, new: int, shuffle: bool = False) -> Path:
    """A day: ``new`` items (copies of catalog titles) and rows taken from the test split, the
    new items as the targets of the first rows."""
    data = demo_model["outputs"]["data"]
    items = pl.read_parquet(data / "items.parquet")
    n = len(read_sid_dir(serving_sid(root, demo_model)).codes)
    added = items.head(new).with_columns(
        pl.Series("item_id", range(n, n + new)),
        (pl.col("title") + " (2027 edition)").alias("title"),
        ("NEW-" + pl.int_range(n, n + new).cast(pl.String)).alias("source_id"),
    )
    rows = pl.read_parquet(data / "test.parquet").head(60)
    targets = rows["target"].to_list()
    targets[:new] = list(range(n, n + new))
    rows = rows.with_columns(pl.Series("target", targets))
    if shuffle:
        rows = rows.with_columns(pl.col("target").shuffle(seed=1))
    day = root / name
    day.mkdir(parents=True)
    added.write_parquet(day / "items.parquet")
    rows.head(40).write_parquet(day / "train.parquet")
    rows.tail(20).write_parquet(day / "valid.parquet")
    return day


def serving_sid(root: Path, demo_model: dict) -> Path:
    state = root / "state"
    return serving(state)["sid"] if (state / STATE_FILE).exists() else demo_model["model"] / "sids"


def _cfg(demo_model: dict, *overrides: str) -> dict[str, Any]:
    base = ["update.replay_valid=20", "update.replay_train=20", "update.max_steps=4"]
    return model_config(demo_model["model"], None, [*base, *overrides])


def test_days_are_promoted_or_backlogged_and_ledgered(demo_model: dict, tmp_path: Path) -> None:
    model, state = demo_model["model"], tmp_path / "state"
    base = read_sid_dir(model / "sids").codes
    # day 1: any result is within a tolerance of 1 -> promoted. 30 steps at lr 0.01 give the
    # serving model some skill, so that day 2's wrecked candidate is measurably worse (from the
    # 6-step demo model both scored near chance on 40 rows, and the comparison was a coin flip)
    learn = ["update.tolerance=1", "update.max_steps=30", "update.learning_rate=0.01"]
    day1 = run_update(model, _day(tmp_path, "d1", demo_model, 3), state, _cfg(demo_model, *learn))
    assert day1["decision"] == "promoted" and day1["new_items"] == 3 and day1["items"] == 153
    point = serving(state)
    assert point["model"] == state / "days" / "d1" / "model"
    grown = read_sid_dir(point["sid"]).codes
    assert grown[:150] == base and len({tuple(c) for c in grown}) == 153  # old SIDs stay put
    assert read_sid_dir(point["model"] / "sids").codes == grown
    assert day1["replay_valid_rows"] == 20 and day1["valid_rows"] == 20 and day1["train_rows"] == 40

    # day 2: a learning rate that wrecks the model, judged with no tolerance -> rejected
    wreck = _cfg(demo_model, "update.tolerance=0", "update.learning_rate=3.0", "update.max_steps=6")
    day2 = run_update(model, _day(tmp_path, "d2", demo_model, 2, shuffle=True), state, wreck)
    assert day2["decision"] == "rejected", day2
    assert day2["new"] < day2["old"] - 0.02 and day2["backlog_after"] == 40
    point = serving(state)
    assert point["model"] == state / "days" / "d1" / "model"  # the serving model stays
    assert len(read_sid_dir(point["sid"]).codes) == 155  # but the new items are in the catalog
    assert not (state / "days" / "d2" / "model").exists()

    # day 3 merges the backlog and, promoted, clears it; its model had GRPO after SFT
    rl = ["rl.max_steps=1", "rl.sample_size=8", "rl.num_generations=2", "rl.eval_steps=0"]
    rl += ["rl.per_device_batch_size=4", "update.rl=true", "update.tolerance=1"]
    day3 = run_update(model, _day(tmp_path, "d3", demo_model, 0), state, _cfg(demo_model, *rl))
    assert day3["backlog_rows"] == 40 and day3["decision"] == "promoted"
    assert day3["backlog_after"] == 0 and read_json(state / STATE_FILE)["backlog"] is None
    assert serving(state)["model"] == state / "days" / "d3" / "model"
    assert read_json(state / "days" / "d3" / "model" / "manifest.json")["stage"] == "rl"

    with open(state / "updates.csv") as f:
        ledger = list(csv.DictReader(f))
    assert [r["day"] for r in ledger] == ["d1", "d2", "d3"] and list(ledger[0]) == list(
        LEDGER_COLUMNS
    )
    assert [r["decision"] for r in ledger] == ["promoted", "rejected", "promoted"]
    # a day already applied is not applied again
    assert run_update(model, tmp_path / "d2", state, wreck) == day2
    assert len(read_json(state / STATE_FILE)["days"]) == 3

    # the promoted model and its grown catalog serve the new items
    svc = load_service(model_config(model, None, ["serve.registry=memory"]), None, state, None)
    assert len(svc.rec.titles) == 155 and svc.rec.by_source["NEW-150"] == 150
    # ... and know every user the state has seen: the base data's and each day's, a day's
    # user with the history of its latest day
    base = pl.read_parquet(demo_model["outputs"]["data"] / "sequences.parquet")
    latest = pl.read_parquet(state / "days" / "d3" / "data" / "sequences.parquet")
    assert set(base["user_id"]) | set(latest["user_id"]) <= set(svc.histories)
    user, seq = latest["user_id"][0], latest["item_ids"][0].to_list()
    assert svc.histories[user] == seq and len(svc.histories) > latest.height


def test_an_interrupted_update_leaves_the_state_and_reruns_cleanly(
    demo_model: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sidrec.app.update as update

    model, state = demo_model["model"], tmp_path / "state"
    day = _day(tmp_path, "d1", demo_model, 2)

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(update, "train_sft", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_update(model, day, state, _cfg(demo_model, "update.tolerance=1"))
    assert not (state / STATE_FILE).exists() and not (state / "days" / "d1").exists()
    monkeypatch.undo()
    args = ["update", "--model", str(model), "--day", str(day), "--state", str(state)]
    assert main([*args, "update.max_steps=2", "update.replay_valid=10", "update.tolerance=1"]) == 0
    assert read_json(state / STATE_FILE)["days"][0]["decision"] == "promoted"
    assert not (state / "work").exists() or not any((state / "work").iterdir())
    quick = [*args, "update.max_steps=2", "update.replay_valid=10", "update.tolerance=1"]
    # a kill between state.json and the ledger: the next run rewrites updates.csv
    (state / "updates.csv").unlink()
    assert main(quick) == 0 and len((state / "updates.csv").read_text().splitlines()) == 2
    # the same contents under another folder name are the same day
    shutil.copytree(day, tmp_path / "d1-again")
    assert main([*quick[:4], str(tmp_path / "d1-again"), *quick[5:]]) == 0
    assert [d["day"] for d in read_json(state / STATE_FILE)["days"]] == ["d1"]
    # a corrected day under the same folder name is applied, under its content hash (its two
    # new items are in the catalog now)
    pl.read_parquet(day / "items.parquet").head(0).write_parquet(day / "items.parquet")
    valid = pl.read_parquet(day / "valid.parquet")
    valid.head(valid.height - 1).write_parquet(day / "valid.parquet")
    assert main(quick) == 0
    days = read_json(state / STATE_FILE)["days"]
    assert days[1]["day"] == f"d1-{days[1]['content_hash'][:8]}" and len(days) == 2
    assert days[1]["content_hash"] != days[0]["content_hash"]
    assert (state / "days" / days[1]["day"]).is_dir()


def test_bad_days_are_refused_naming_the_file_and_row(demo_model: dict, tmp_path: Path) -> None:
    model, state = demo_model["model"], tmp_path / "state"
    cfg = _cfg(demo_model)
    day = _day(tmp_path, "d1", demo_model, 2)
    rows = pl.read_parquet(day / "train.parquet")
    targets = rows["target"].to_list()
    targets[5] = 999
    rows.with_columns(pl.Series("target", targets)).write_parquet(day / "train.parquet")
    message = r"train.parquet, row 5: unknown item id 999 \(the catalog has items 0..151\)"
    with pytest.raises(SidrecError, match=message):
        run_update(model, day, state, cfg)
    rows.write_parquet(day / "train.parquet")
    items = pl.read_parquet(day / "items.parquet")
    items.with_columns(pl.Series("item_id", [150, 160])).write_parquet(day / "items.parquet")
    with pytest.raises(SidrecError, match="items.parquet, row 1: expected item_id 151"):
        run_update(model, day, state, cfg)
    # a source id twice in the day, or one the catalog already holds
    first = items["source_id"][0]
    twice = items.with_columns(pl.Series("source_id", [first, first]))
    twice.write_parquet(day / "items.parquet")
    with pytest.raises(SidrecError, match=f"items.parquet, row 1: .*{first!r} is already"):
        run_update(model, day, state, cfg)
    own = pl.read_parquet(model / "items.parquet")["source_id"][3]
    items.with_columns(pl.Series("source_id", [own, "x"])).write_parquet(day / "items.parquet")
    with pytest.raises(SidrecError, match=f"items.parquet, row 0: .*{own!r} is already"):
        run_update(model, day, state, cfg)
    items.write_parquet(day / "items.parquet")
    (day / "valid.parquet").unlink()
    with pytest.raises(SidrecError, match="valid rows does not exist"):
        run_update(model, day, state, cfg)
    with pytest.raises(SidrecError, match="update.tolerance"):
        run_update(model, day, state, _cfg(demo_model, "update.tolerance=-1"))
    assert not (state / STATE_FILE).exists()  # nothing was applied


def test_a_tree_model_updates_on_its_grown_catalog(demo_model: dict, tmp_path: Path) -> None:
    from sidrec.core.tree_model import load_tree
    from sidrec.sft.tree import train_tree

    out, state = demo_model["outputs"], tmp_path / "state"
    tree = ["model.family=tree", "tree.epochs=2", "tree.hidden=16", "swanlab.mode=disabled"]
    cfg = model_config(demo_model["model"], None, tree)
    train_tree(out["data"], out["sid"], tmp_path / "tree", cfg)
    day_cfg = model_config(
        tmp_path / "tree", None, ["update.tolerance=1", "update.replay_valid=20"]
    )
    row = run_update(tmp_path / "tree", _day(tmp_path, "d1", demo_model, 3), state, day_cfg)
    assert row["decision"] == "promoted" and row["items"] == 153
    model = serving(state)["model"]
    assert read_json(model / "manifest.json")["family"] == "tree"
    assert load_tree(model).representative.sum() == 153  # every new item is a SID of its own
    svc = load_service(model_config(model, None, ["serve.registry=memory"]), None, state, None)
    found = svc.rec.recommend([svc.rec.resolve(["NEW-150", 3])], k=153)[0]
    assert len(found) == 153 and {f["item_id"] for f in found} == set(range(153))
    with pytest.raises(SidrecError, match="GRPO step trains LM models"):
        run_update(
            tmp_path / "tree",
            tmp_path / "d1",
            tmp_path / "s2",
            {**day_cfg, "update": {**day_cfg["update"], "rl": True}},
        )


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_registered_items_survive_updates_and_no_id_or_sid_is_handed_out_twice(
    demo_model: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, kind: str
) -> None:
    from sidrec.core.embeddings import load_embeddings
    from sidrec.serve.service import TOKEN_ENV, ItemRequest

    monkeypatch.setenv(TOKEN_ENV, "t")
    model, state = demo_model["model"], tmp_path / "state"
    # memory: the state's registry.jsonl; redis: the replicas' Redis
    shared = [f"update.registry={kind}", f"serve.redis_url={redis_url}"]
    shared += [f"serve.registry_record={tmp_path / 'record.json'}"]
    run_update(model, _day(tmp_path, "d1", demo_model, 3), state, _cfg(demo_model, *shared))
    serve_cfg = model_config(model, None, [f"serve.registry={kind}", *shared])
    vectors = load_embeddings(demo_model["outputs"]["embeddings"])
    svc = load_service(serve_cfg, None, state, None)
    live = [
        svc.register(ItemRequest(source_id=f"live-{i}", embedding=vectors[40 + i].tolist()))
        for i in range(2)
    ]
    assert [r.item_id for r in live] == [153, 154]
    # the next day names its two new items 153 and 154 (continuing the catalog it knows of);
    # one of them is live-1, registered meanwhile
    day = _day(tmp_path, "d2", demo_model, 2)
    items = pl.read_parquet(day / "items.parquet")
    items.with_columns(pl.Series("source_id", ["NEW-A", "live-1"])).write_parquet(
        day / "items.parquet"
    )
    row = run_update(model, day, state, _cfg(demo_model, *shared))
    assert row["items"] == 156
    grown = pl.read_parquet(serving(state)["items"])
    assert grown["source_id"].to_list()[153:] == ["live-0", "live-1", "NEW-A"]
    sids = read_sid_dir(serving(state)["sid"]).sids
    assert sids[153:155] == [r.sid for r in live] and len(set(sids)) == 156
    # the day's rows follow the renumbering: its item 153 (NEW-A) is 155, its 154 is live-1
    train = pl.read_parquet(state / "days" / "d2" / "data" / "train.parquet")
    assert train["target"].to_list()[:2] == [155, 154]
    # a replica started on the new state knows them all and hands out the next id
    again = load_service(serve_cfg, None, state, None)
    assert again.rec.by_source["live-0"] == 153 and again.rec.sids == sids
    nxt = again.register(ItemRequest(source_id="live-2", embedding=vectors[60].tolist()))
    assert nxt.item_id == 156 and nxt.sid not in sids
    # a state shares its ids with one kind of registry
    other = "redis" if kind == "memory" else "memory"
    with pytest.raises(SidrecError, match=f"--registry {kind}"):
        load_service(model_config(model, None, [f"serve.registry={other}"]), None, state, None)


def test_old_days_are_pruned_but_the_serving_model_and_every_user_stay(
    demo_model: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sidrec.app.update as update

    model, state = demo_model["model"], tmp_path / "state"
    keep = _cfg(demo_model, "update.keep_days=1", "update.tolerance=1")
    run_update(model, _day(tmp_path, "d1", demo_model, 2), state, keep)
    users_d1 = set(pl.read_parquet(state / "days" / "d1" / "data" / "sequences.parquet")["user_id"])

    # day 2 is rejected: the model day 1 promoted serves on
    def worse(cfg: dict, serving_model: Path, work: Path) -> tuple[float, float, Path]:
        for part in ("eval-serving", "eval-candidate"):
            (work / part).mkdir()
        return 0.5, 0.0, work / "model"

    monkeypatch.setattr(update, "_compare", worse)
    strict = _cfg(demo_model, "update.keep_days=1", "update.tolerance=0")
    assert run_update(model, _day(tmp_path, "d2", demo_model, 1), state, strict)["decision"] == (
        "rejected"
    )
    assert sorted(p.name for p in (state / "days" / "d1").iterdir()) == ["model"]
    assert serving(state)["model"] == state / "days" / "d1" / "model"
    monkeypatch.undo()
    svc = load_service(model_config(model, None, ["serve.registry=memory"]), None, state, None)
    assert users_d1 <= set(svc.histories) and len(svc.rec.titles) == 153
    with open(state / "updates.csv") as f:
        assert [r["day"] for r in csv.DictReader(f)] == ["d1", "d2"]
    # day 3 is promoted: day 2's folder goes, and day 1's model with it
    run_update(model, _day(tmp_path, "d3", demo_model, 0), state, keep)
    assert sorted(p.name for p in (state / "days").iterdir()) == ["d3"]
    with pytest.raises(SidrecError, match="keep_days"):
        update.prune_days(state, read_json(state / STATE_FILE), -1)


def test_a_promoted_model_is_hot_reloaded_and_rolled_back_without_a_dropped_request(
    demo_model: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from fastapi.testclient import TestClient

    from sidrec.app.update import rollback
    from sidrec.serve.service import TOKEN_ENV, create_app

    monkeypatch.setenv(TOKEN_ENV, "t")
    model, state = demo_model["model"], tmp_path / "state"
    run_update(
        model, _day(tmp_path, "d1", demo_model, 2), state, _cfg(demo_model, "update.tolerance=1")
    )
    promoted = read_json(state / "days" / "d1" / "model" / "manifest.json")["run_id"]
    base = read_json(model / "manifest.json")["run_id"]
    cfg = model_config(model, None, ["serve.registry=memory", "serve.reload_seconds=0.1"])
    svc = load_service(cfg, None, state, None)
    statuses: list[int] = []
    stop = threading.Event()
    with TestClient(create_app(svc), headers={"Authorization": "Bearer t"}) as c:
        assert c.get("/health").json()["model"] == promoted
        live = c.post("/items", json={"source_id": "LIVE-1", "title": "a lamp"}).json()

        def hammer() -> None:
            while not stop.is_set():
                statuses.append(c.post("/recommend", json={"history": [1], "k": 3}).status_code)

        worker = threading.Thread(target=hammer)
        worker.start()
        assert rollback(state) == {"rolled_back": "d1", "serving": str(model)}
        for _ in range(100):  # the replica swaps the base model in between two batches
            if c.get("/health").json()["model"] == base:
                break
            time.sleep(0.1)
        stop.set()
        worker.join()
        health = c.get("/health").json()
        assert health["model"] == base and health["reload_error"] is None
        assert statuses and set(statuses) == {200}  # no request dropped across the swap
        svc.wait_indexed(svc.known)
        # the item registered before the swap is still served, with its id
        assert svc.rec.by_source["LIVE-1"] == live["item_id"] == 152
        assert c.get("/metrics").json()["reloads"] >= 1
    with open(state / "updates.csv") as f:
        assert [r["decision"] for r in csv.DictReader(f)] == ["rolled back"]
    with pytest.raises(SidrecError, match="nothing to roll back"):
        rollback(state)
    assert main(["update", "--state", str(state), "--rollback"]) == 2
