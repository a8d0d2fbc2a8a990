"""Every key in ``defaults.yaml`` is read by the code that owns it: the stages run on tiny
demo-sized data with a config that records its reads, across the sources, SID methods, SFT
modes and baselines that own the keys, and no key may be left unread."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import polars as pl
from conftest import write_amazon18_raw

from sidrec.app.pipeline import run_pipeline
from sidrec.app.preflight import preflight
from sidrec.app.update import run_update
from sidrec.baselines.ranker import train_ranker
from sidrec.baselines.sasrec import train_sasrec
from sidrec.baselines.two_tower import train_two_tower
from sidrec.core.config import ReadTracker, defaults, leaf_keys, load_config, stage_path
from sidrec.core.dataset import read_dataset
from sidrec.core.ranking import write_ranking
from sidrec.core.sids import SidTable
from sidrec.data.stage import build_from_config, export_minionerec_dir, write_imported_sids
from sidrec.rl.train import train_rl
from sidrec.rl.tree import train_tree_rl
from sidrec.rq.stage import build_sids
from sidrec.serve.cli import load_service, server
from sidrec.serve.registry import open_registry
from sidrec.sft.convert import convert
from sidrec.sft.train import train_sft
from sidrec.sft.tree import train_tree

TINY = [
    "data.synth.n_items=120",
    "data.synth.n_users=100",
    "embed.model=all-minilm-l6-v2",
    "embed.max_seq_length=16",
    "sid.codebook_size=8",
    "sid.epochs=2",
    "model.tiny_qwen2.hidden_size=16",
    "model.tiny_qwen2.intermediate_size=32",
    "model.tiny_qwen2.num_hidden_layers=1",
    "model.tiny_qwen2.num_attention_heads=2",
    "model.tiny_qwen2.num_key_value_heads=1",
    "model.name_or_path=tiny-qwen2",
    "sft.max_steps=2",
    "sft.eval_steps=2",
    "sft.global_batch_size=8",
    "sft.per_device_batch_size=8",
    "convert.max_valid_examples=16",
    "evaluate.max_users=16",
    "evaluate.num_beams=4",
    "sasrec.hidden=8",
    "sasrec.heads=1",
    "sasrec.epochs=1",
    "sasrec.max_valid_users=16",
    "sasrec.top_k=5",
    "rl.max_steps=1",
    "rl.num_generations=2",
    "rl.per_device_batch_size=4",
    "rl.sample_size=8",
    "rl.eval_steps=0",
]


def _letter_src(root: Path) -> Path:
    root.mkdir()
    seqs = {str(u): [(u + k) % 30 for k in range(6)] for u in range(40)}
    (root / "Tiny.inter.json").write_text(json.dumps(seqs))
    index = {str(i): [f"<a_{i // 8}>", f"<b_{i % 8}>"] for i in range(30)}
    (root / "Tiny.index.json").write_text(json.dumps(index))
    return root


SPLITS = ("valid", "test")


def _lists_with_targets(data: Path, split: str, out: Path) -> Path:
    """An evaluation directory of ``split`` whose 5-item lists hold every other row's target."""
    ds, _ = read_dataset(data)
    rows = ds.split(split)
    n = ds.items.height
    items = (rows["target"].to_numpy()[:, None] + np.arange(1, 6)) % n
    items[::2, 2] = rows["target"].to_numpy()[::2]
    out.mkdir()
    info = {"method": "lists", "split": split, "exclude_history": False, "max_users": 0}
    write_ranking(out, rows, items, -np.arange(5.0)[None].repeat(len(items), 0), info)
    return out


def test_every_default_key_is_read(tmp_path: Path) -> None:
    reads: set[str] = set()

    def cfg(*overrides: str) -> ReadTracker:
        base = [f"output_root={tmp_path}", f"model.cache_dir={tmp_path / 'models'}", *TINY]
        base.append(f"embed.cache_dir={tmp_path / 'emb-cache'}")
        return ReadTracker(load_config(None, [*base, *overrides]), reads=reads)

    # the demo pipeline: synth data, embeddings, constrained RQ-Kmeans, examples, SFT (with a
    # local SwanLab dashboard), evaluation
    demo = cfg("sid.method=rqkmeans-constrained", "swanlab.mode=local")
    outputs = run_pipeline(demo, log=lambda _: None)
    # the trained quantizers and their own keys
    for method in ("rqvae", "rqkmeans-plus"):
        c = cfg(f"sid.method={method}", "swanlab.mode=disabled")
        build_sids(stage_path(c, "embeddings"), tmp_path / method, c)
    # every task of the prompt format
    tasks = ("sid_history_to_title", "title_history_to_sid", "title_history_to_title")
    c = cfg(*(f"convert.tasks.{t}=1" for t in tasks))
    convert(outputs["data"], outputs["sid"], tmp_path / "all-tasks", c)
    # SFT in LoRA mode on whole sequences, validated by NDCG@10, and the SASRec baseline
    c = cfg(
        "sft.mode=lora",
        "sft.format=sequence",
        "sft.select_by=ndcg@10",
        "sft.valid_users=8",
        "evaluate.num_beams=10",
        "convert.tasks.title_to_sid=0",
        "convert.tasks.sid_to_title=0",
        "swanlab.mode=disabled",
    )
    convert(outputs["data"], outputs["sid"], tmp_path / "seq-examples", c)
    train_sft(tmp_path / "seq-examples", tmp_path / "lora", c)
    train_sasrec(outputs["data"], stage_path(c, "sasrec"), c)
    # the tree family distilled from that SASRec, with plateau decay and averaged weights,
    # then GRPO over its exact groups
    tree = ["model.family=tree", "tree.hidden=8", "tree.heads=1", "tree.epochs=1"]
    tree += ["tree.lr_factor=0.5", "tree.ema=0.9", "swanlab.mode=disabled"]
    c = cfg(*tree, f"tree.teacher={stage_path(c, 'sasrec')}")
    train_tree(outputs["data"], outputs["sid"], tmp_path / "tree", c)
    c = cfg(*tree, "rl.max_steps=1", "rl.force_target=true", "rl.valid_users=8")
    train_tree_rl(tmp_path / "tree", outputs["data"], tmp_path / "tree-rl", c)
    c = cfg("two_tower.epochs=1", "two_tower.dim=8", "two_tower.top_k=20", "swanlab.mode=disabled")
    train_two_tower(outputs["data"], outputs["embeddings"], stage_path(c, "two_tower"), c)
    # the Wide&Deep ranker over lists that hold every other row's target
    lists = {s: _lists_with_targets(outputs["data"], s, tmp_path / f"lists-{s}") for s in SPLITS}
    c = cfg("rank.model=wide_deep", "rank.epochs=1", "swanlab.mode=disabled")
    train_ranker(
        outputs["data"],
        lists["valid"],
        lists["test"],
        stage_path(c, "rank"),
        c,
        outputs["embeddings"],
    )
    # GRPO from the demo SFT model, with every reward, sampled rollouts, dynamic sampling and
    # a synced reference model; then DPO on the title tasks
    rl = ("rl.eval_steps=1", "rl.save_steps=1", "rl.valid_users=8", "evaluate.num_beams=10")
    c = cfg(
        *rl,
        "rl.rewards.rule=1",
        "rl.rewards.ranking_only=1",
        "rl.rewards.semantic=1",
        "rl.rewards.sasrec=1",
        "rl.rollout=sample",
        "rl.drop_zero_variance=true",
        "rl.sync_ref_model=true",
        "swanlab.mode=disabled",
    )
    train_rl(
        outputs["sft"],
        outputs["data"],
        tmp_path / "grpo",
        c,
        embeddings=outputs["embeddings"],
        sasrec=stage_path(c, "sasrec"),
    )
    c = cfg(
        *rl,
        "rl.algo=dpo",
        "rl.tasks.title_to_sid=1",
        "rl.tasks.title_history_to_sid=1",
        "swanlab.mode=disabled",
    )
    train_rl(outputs["sft"], outputs["data"], tmp_path / "dpo", c, examples=tmp_path / "all-tasks")
    # the other sources
    (tmp_path / "raw").mkdir()
    raw = write_amazon18_raw(tmp_path / "raw", "Tiny_Category")
    build_from_config(
        cfg(
            "data.source=amazon18",
            f"data.amazon18.raw_dir={raw}",
            "data.amazon18.dataset=Tiny_Category",
            "data.amazon18.user_k=3",
            "data.amazon18.item_k=3",
            "data.split=temporal",
            "data.max_history=10",
        ),
        tmp_path / "a18",
    )
    write_imported_sids(
        tmp_path / "m-sid", SidTable([[i // 8, i % 8, 0] for i in range(120)], [256] * 3), "t", {}
    )
    export_minionerec_dir(outputs["data"], tmp_path / "m-sid", tmp_path / "m-src")
    build_from_config(
        cfg(
            "data.source=minionerec",
            f"data.minionerec.src={tmp_path / 'm-src'}",
            "data.minionerec.dataset=synth",
        ),
        tmp_path / "m-data",
    )
    letter = _letter_src(tmp_path / "letter")
    build_from_config(
        cfg("data.source=letter", f"data.letter.src={letter}", "data.letter.dataset=Tiny"),
        tmp_path / "l-data",
    )
    shop = Path(__file__).resolve().parents[1] / "docs" / "examples" / "shop"
    build_from_config(
        cfg(
            "data.source=interactions",
            f"data.interactions.interactions={shop / 'interactions.csv'}",
            f"data.interactions.items={shop / 'items.csv'}",
            "data.interactions.brand_col=brand",
        ),
        tmp_path / "i-data",
    )
    # a day of the living catalog, then the service over the model it promoted
    day = tmp_path / "day-1"
    day.mkdir()
    pl.read_parquet(outputs["data"] / "test.parquet").head(12).write_parquet(day / "train.parquet")
    pl.read_parquet(outputs["data"] / "valid.parquet").head(6).write_parquet(day / "valid.parquet")
    c = cfg("update.max_steps=1", "update.replay_valid=4", "update.metric=NDCG@3")
    run_update(outputs["sft"], day, tmp_path / "updates", c)
    c = cfg("serve.registry=memory")
    app = server(c, load_service(c, None, tmp_path / "updates", None))
    assert (app.config.host, app.config.port) == ("127.0.0.1", 8000)
    # the Redis registry of replicas (built without connecting) and where they record it
    _, record = open_registry(cfg("serve.registry=redis"), outputs["sft"], None)
    assert record == outputs["sft"] / "registry.json"
    # what the machine must have for a profile
    preflight(cfg())
    unread = sorted(set(leaf_keys(defaults())) - reads)
    assert unread == [], f"keys in defaults.yaml that no code read: {unread}"


def test_reads_are_recorded_by_key_and_by_iteration() -> None:
    cfg = ReadTracker({"a": {"b": 1, "c": {"d": 2}}, "e": 3})
    assert cfg["a"]["b"] == 1 and cfg.reads == {"a.b"}
    assert dict(cfg["a"]["c"]) == {"d": 2} and cfg.reads == {"a.b", "a.c.d"}
    assert cfg.get("e") == 3 and "e" in cfg.reads
    assert leaf_keys(cfg) == ["a.b", "a.c.d", "e"]


def test_a_deep_copy_records_nothing_until_read() -> None:
    # copy.deepcopy (sidrec update copies the config for its fine-tune) once iterated every
    # section and so marked every key read, which let the every-key check pass unread keys
    cfg = ReadTracker({"a": {"b": 1, "c": {"d": 2}}, "e": 3})
    copied = copy.deepcopy(cfg)
    assert cfg.reads == set() and copied == {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    copied["a"]["c"]["d"] = 5  # a real copy: the original keeps its value
    assert cfg["a"]["c"]["d"] == 2 and cfg.reads == {"a.c.d"}
    assert copied["e"] == 3 and cfg.reads == {"a.c.d", "e"}  # the copy's reads count too
