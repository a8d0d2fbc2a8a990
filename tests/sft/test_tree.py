"""The tree family: the SID trie, exact scores that are a distribution over the catalog,
training through ``sidrec sft`` (resumable, distillation, bad settings), and every consumer
of a model directory (evaluate, recommend, a grown catalog)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import random_sids

from sidrec.app.cli import main
from sidrec.core.config import load_config
from sidrec.core.errors import SidrecError
from sidrec.core.io import read_json
from sidrec.core.sids import SidTable
from sidrec.core.training import work_dir
from sidrec.core.tree_model import TreeSID, Trie, grown_state, rank_tree
from sidrec.serve.recommend import Recommender
from sidrec.sft import tree as tree_stage

SHAPE = {
    "hidden": 16,
    "layers": 1,
    "heads": 2,
    "dropout": 0.0,
    "position": "learned",
    "max_len": 8,
    "node_embeddings": True,
}
TINY = [
    "model.family=tree",
    "tree.hidden=16",
    "tree.heads=2",
    "tree.epochs=3",
    "tree.patience=0",
    "evaluate.num_beams=10",
    "swanlab.mode=disabled",
]


def test_the_trie_holds_every_sid_once_with_its_path() -> None:
    # one SID appended a level (dedup: append), two items share a SID
    table = SidTable([[0, 1], [0, 2], [1, 1], [0, 1, 0], [1, 1]], [2, 3, 1])
    trie = Trie(table)
    assert trie.levels == 3 and len(trie.sids) == 4
    assert trie.sid_of_item[2] == trie.sid_of_item[4]
    assert trie.representative.tolist() == [True, True, True, True, False]
    for s, codes in enumerate(trie.sids.tolist()):
        for lv in range(trie.levels):
            node = trie.node[s, lv]
            assert trie.code[lv][node] == codes[lv]
            if lv:
                parent = trie.node[s, lv - 1]
                assert trie.parent[lv][node] == parent
                assert trie.kids[lv][parent, trie.slot[lv][node]] == node
    # the short SIDs end with the end code (the level's codebook size)
    assert trie.sids[trie.sid_of_item[0]].tolist() == [0, 1, 1]


def test_exact_scores_are_a_distribution_over_the_catalog() -> None:
    table = random_sids(60, levels=3, k=4)
    table.codes[5] = list(table.codes[4])  # a shared SID counts once
    torch.manual_seed(0)
    model = TreeSID(60, Trie(table), SHAPE).eval()
    seq = torch.tensor([[0, 0, 3, 9], [5, 6, 7, 8]])
    scores = model.item_scores(model.encode(seq)[:, -1])
    assert scores.shape == (2, 60) and torch.isinf(scores[:, 5]).all()
    torch.testing.assert_close(scores.exp().sum(1), torch.ones(2))
    # the training loss is -log p of the target's SID, level by level
    h = model.encode(seq)[:, -1]
    loss = model.loss(h, torch.tensor([10, 20]))
    torch.testing.assert_close(loss, -(scores[0, 10] + scores[1, 20]) / 2)
    items, top, unfiltered = rank_tree(model, [[2, 8], [4, 5, 6, 7]], 5, 1, exclude_history=True)
    assert 8 not in items[0] and not set(items[1]) & {4, 5, 6, 7}
    full = scores[1].topk(5).indices.numpy()  # the same history, nothing left out
    assert unfiltered[1].tolist() == full.tolist()
    assert (np.diff(top, axis=1) <= 0).all()


def test_a_grown_catalog_keeps_every_trained_node() -> None:
    table = random_sids(40, levels=3, k=4)
    old = Trie(table)
    torch.manual_seed(0)
    model = TreeSID(40, old, SHAPE)
    used = {tuple(c) for c in table.codes}
    new_codes = [c for c in ([a, b, d] for a in range(4) for b in range(4) for d in range(4))]
    new_codes = [c for c in new_codes if tuple(c) not in used][:5]
    grown = SidTable([*table.codes, *new_codes], table.codebook_sizes)
    bigger = TreeSID(45, Trie(grown), SHAPE)
    bigger.load_state_dict(grown_state(model.state_dict(), old, bigger, 40))
    seq = torch.tensor([[0, 1, 2, 3]])
    with torch.no_grad():
        before = model.item_scores(model.encode(seq)[:, -1])
        after = bigger.item_scores(bigger.encode(seq)[:, -1])
    # an old item none of whose prefixes gained a child keeps its probability exactly
    prefixes = {tuple(c[:n]) for c in table.codes for n in range(4)}
    gained = {
        tuple(c[: n - 1]) for c in new_codes for n in range(1, 4) if tuple(c[:n]) not in prefixes
    }
    kept = [i for i, c in enumerate(table.codes) if not {tuple(c[:n]) for n in range(3)} & gained]
    assert 0 < len(kept) < 40
    torch.testing.assert_close(before[0, kept], after[0, kept])
    torch.testing.assert_close(after.exp().sum(), torch.tensor(1.0))


def _train(small_run: dict, out: Path, *extra: str) -> int:
    cfg = small_run["root"] / "tree.yaml"
    cfg.write_text("model:\n  family: tree\n")
    args = ["sft", "--config", str(cfg), "--data", str(small_run["data"])]
    return main([*args, "--sid", str(small_run["sid"]), "--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def tree_model(small_run: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tree") / "sft"
    assert _train(small_run, out, f"output_root={out.parent}") == 0
    return out


def test_sft_trains_a_tree_model_directory(tree_model: Path) -> None:
    manifest = read_json(tree_model / "manifest.json")
    log = read_json(tree_model / "train_log.json")
    assert manifest["family"] == "tree" and manifest["counts"]["epochs"] == 3 == len(log)
    assert manifest["best_valid_ndcg10"] == max(r["NDCG@10"] for r in log)
    assert read_json(tree_model / "tree.json")["hidden"] == 16
    assert (tree_model / "sids" / "index.json").is_file() and not work_dir(tree_model).exists()


def test_evaluate_and_recommend_take_a_tree_model(
    tree_model: Path, small_run: dict, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(tree_model), "--data", str(small_run["data"])]
    left_out = [*TINY, "evaluate.exclude_history=true", f"output_root={tmp_path}"]
    assert main([*args, "--out", str(out), *left_out]) == 0
    results = read_json(out / "results.json")
    assert results["family"] == "tree" and results["users"] == 150
    pred = pl.read_parquet(out / "predictions.parquet")
    test = pl.read_parquet(small_run["data"] / "test.parquet").select("user_id", "history")
    pred = pred.join(test, on="user_id")
    for row, hist in zip(pred["ranked_items"].to_list(), pred["history"].to_list(), strict=True):
        assert len(row) == 10 == len(set(row)) and all(0 <= i < 120 for i in row)
        assert not set(row) & set(hist)  # the history left out
    rec = Recommender(tree_model)
    found = rec.recommend([[1, 2, 3]], k=5)[0]
    assert len(found) == 5 and all(f["sid"] == rec.sids[f["item_id"]] for f in found)
    # an item added at run time is recommendable through its codes
    free = next(
        c
        for c in ([a, b, d] for a in range(8) for b in range(8) for d in range(8))
        if c not in rec.table.codes
    )
    rec.add_items([(free, "new thing", "NEW1")])
    assert rec.catalog_size == 121 and rec.resolve(["NEW1"]) == [120]
    assert len(rec.recommend([[120]], k=121)[0]) == 121


def test_rl_refuses_a_tree_model(tree_model: Path, small_run: dict, tmp_path: Path) -> None:
    from sidrec.core.errors import InputError
    from sidrec.rl.train import train_rl

    cfg = load_config(None, ["swanlab.mode=disabled"])
    with pytest.raises(InputError, match="GRPO and DPO train LM models"):
        train_rl(tree_model, small_run["data"], tmp_path / "rl", cfg)
    assert not (tmp_path / "rl").exists()


@pytest.mark.parametrize("extra", [(), ("tree.lr_factor=0.5", "tree.ema=0.9")])
def test_an_interrupted_tree_run_resumes_to_the_same_weights(
    small_run: dict,
    tree_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: tuple[str, ...],
) -> None:
    # with the plateau decay and the weight average, their states come back from the
    # checkpoint too; the reference is an uninterrupted run with the same settings
    out, root = tmp_path / "sft", f"output_root={tmp_path}"
    reference = tree_model
    if extra:
        reference = tmp_path / "reference"
        assert _train(small_run, reference, root, *extra) == 0
        log = read_json(reference / "train_log.json")
        assert log[0]["lr"] == 0.001 and all(r["lr"] <= 0.001 for r in log)
    save = tree_stage.save_loop_checkpoint

    def stop_after_two(work: Path, step: int, *args: object) -> None:
        save(work, step, *args)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(tree_stage, "save_loop_checkpoint", stop_after_two)
    assert _train(small_run, out, root, *extra) != 0  # interrupted
    monkeypatch.undo()
    assert _train(small_run, out, root, *extra) == 2  # refused without --resume
    assert _train(small_run, out, root, *extra, "--resume") == 0
    assert read_json(out / "manifest.json")["resumed_from"] == "checkpoint-2"
    logs = [read_json(d / "train_log.json") for d in (out, reference)]
    assert [r["epoch"] for r in logs[0]] == [r["epoch"] for r in logs[1]] == [1, 2, 3]
    for a, b in zip(*logs, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    # the same weights up to float rounding (CPU scatter-adds, reloaded optimizer moments:
    # seen 1e-6)
    x, y = (torch.load(d / "tree.pt", weights_only=True) for d in (out, reference))
    assert x.keys() == y.keys()
    for k in x:
        torch.testing.assert_close(x[k], y[k], rtol=0, atol=1e-5)


def test_a_sasrec_teacher_is_distilled(small_run: dict, tmp_path: Path) -> None:
    teacher = tmp_path / "sasrec"
    cfg = ["sasrec.epochs=2", "sasrec.hidden=16", "swanlab.mode=disabled", "evaluate.max_users=20"]
    base = ["baseline", "sasrec", "--data", str(small_run["data"]), "--out", str(teacher)]
    assert main([*base, *cfg, f"output_root={tmp_path}"]) == 0
    out = tmp_path / "distilled"
    assert _train(small_run, out, f"output_root={tmp_path}", f"tree.teacher={teacher}") == 0
    assert read_json(out / "manifest.json")["teacher"] == str(teacher)
    short = ["tree.max_len=60", f"tree.teacher={teacher}"]
    with pytest.raises(SidrecError, match="reads 50 items of history"):
        tree_stage.train_tree(
            small_run["data"], small_run["sid"], tmp_path / "x", load_config(None, [*TINY, *short])
        )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tree.hidden=0", "tree.hidden=0"),
        ("tree.dropout=1.0", "tree.dropout in"),
        ("tree.lr_factor=0", "tree.lr_factor in (0, 1]"),
        ("tree.ema=1.0", "tree.ema in [0, 1)"),
        ("tree.position=alibi", "tree.position one of"),
        ("tree.heads=3", "split into tree.heads"),
        ("model.family=tree5", "model.family must be one of"),
    ],
)
def test_bad_tree_settings_fail_before_training(
    small_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture, override: str, message: str
) -> None:
    assert _train(small_run, tmp_path / "sft", override) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not (tmp_path / "sft").exists()
    assert not work_dir(tmp_path / "sft").exists()
