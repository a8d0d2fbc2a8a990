"""``sidrec rl`` on a tree model: groups drawn from the exact distribution over the catalog,
the rewards of ``sidrec.rl.rewards``, the best validation step kept, resumable, refused
settings, and the output a tree model directory every consumer takes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sidrec.app.cli import main
from sidrec.core.config import load_config
from sidrec.core.io import read_json
from sidrec.core.training import work_dir
from sidrec.core.tree_model import is_tree_model, load_tree
from sidrec.rl import tree as tree_rl

TREE = [
    "model.family=tree",
    "tree.hidden=16",
    "tree.heads=2",
    "tree.epochs=3",
    "tree.patience=0",
    "evaluate.num_beams=10",
    "swanlab.mode=disabled",
]
RL = [
    "rl.num_generations=4",
    "rl.per_device_batch_size=32",
    "rl.max_steps=6",
    "rl.eval_steps=2",
    "rl.save_steps=2",
    "rl.learning_rate=0.01",
    "rl.valid_users=100",
]


@pytest.fixture(scope="module")
def tree_model(small_run: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tree_rl") / "sft"
    args = ["sft", "--config", str(_profile(small_run)), "--data", str(small_run["data"])]
    assert main([*args, "--sid", str(small_run["sid"]), "--out", str(out), *TREE]) == 0
    return out


def _profile(small_run: dict) -> Path:
    cfg = small_run["root"] / "tree_rl.yaml"
    cfg.write_text("model:\n  family: tree\n")
    return cfg


def _rl(small_run: dict, model: Path, out: Path, *extra: str) -> int:
    args = ["rl", "--config", str(_profile(small_run)), "--model", str(model)]
    args += ["--data", str(small_run["data"]), "--out", str(out)]
    return main([*args, *TREE, *RL, f"output_root={out.parent}", *extra])


def test_groups_are_the_best_items_or_a_sample_and_can_carry_the_target() -> None:
    logp = torch.log_softmax(torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]] * 2), dim=1)
    target = torch.tensor([4, 1])
    r = {"num_generations": 3, "rollout": "beam", "temperature": 1.0, "force_target": False}
    items, chosen = tree_rl.group_of(logp, target, r)
    assert items.tolist() == [[1, 3, 2], [1, 3, 2]]  # top 3, best first
    torch.testing.assert_close(chosen, logp.gather(1, items))
    items, _ = tree_rl.group_of(logp, target, {**r, "force_target": True})
    assert items.tolist() == [[1, 3, 4], [1, 3, 2]]  # the target replaced the last member
    torch.manual_seed(0)
    many = torch.log_softmax(torch.randn(200, 50) * 5, dim=1)  # peaked: often the top
    items, chosen = tree_rl.group_of(many, target.repeat(100), {**r, "rollout": "sample"})
    assert all(len(set(row)) == 3 for row in items.tolist())  # without replacement
    assert bool((chosen[:, :-1] >= chosen[:, 1:]).all())  # ordered by the model's scores
    top = many.topk(3, dim=1).indices
    assert 0 < (items == top).all(1).float().mean() < 1  # a sample, not always the top


def test_rl_trains_a_tree_model_directory_keeping_the_best_validation_step(
    small_run: dict, tree_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rl"
    assert _rl(small_run, tree_model, out, "rl.force_target=true", "rl.rollout=sample") == 0
    assert is_tree_model(out) and not work_dir(out).exists()
    manifest = read_json(out / "manifest.json")
    log = read_json(out / "train_log.json")
    assert [r["step"] for r in log] == [0, 2, 4, 6] and manifest["counts"]["steps"] == 6
    assert manifest["best_valid_ndcg10"] == max(r["NDCG@10"] for r in log)
    assert manifest["start_valid_ndcg10"] == log[0]["NDCG@10"]
    assert all(r["group_has_target"] == 1.0 for r in log[1:])  # forced into every group
    kept = torch.load(out / "tree.pt", weights_only=True)
    start = torch.load(tree_model / "tree.pt", weights_only=True)
    moved = any(not torch.equal(kept[k], start[k]) for k in kept)
    assert moved == (manifest["best_step"] > 0)
    model = load_tree(out)
    scores = model.item_scores(model.encode(torch.tensor([[1, 2, 3]]))[:, -1])
    torch.testing.assert_close(scores.exp().sum(), torch.tensor(1.0))
    assert main(["evaluate", "--model", str(out), "--data", str(small_run["data"]),
                 "--out", str(tmp_path / "eval"), *TREE]) == 0  # fmt: skip
    assert read_json(tmp_path / "eval" / "results.json")["family"] == "tree"


def test_an_interrupted_tree_rl_run_resumes_to_the_same_weights(
    small_run: dict, tree_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, out = tmp_path / "whole", tmp_path / "rl"
    assert _rl(small_run, tree_model, whole, "rl.rollout=sample") == 0
    save = tree_rl.save_loop_checkpoint

    def stop_after_four(work: Path, step: int, *args: object) -> None:
        save(work, step, *args)
        if step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(tree_rl, "save_loop_checkpoint", stop_after_four)
    assert _rl(small_run, tree_model, out, "rl.rollout=sample") != 0
    monkeypatch.undo()
    assert _rl(small_run, tree_model, out, "rl.rollout=sample", "--resume") == 0
    assert read_json(out / "manifest.json")["resumed_from"] == "checkpoint-4"
    logs = [read_json(d / "train_log.json") for d in (out, whole)]
    for a, b in zip(*logs, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    x, y = (torch.load(d / "tree.pt", weights_only=True) for d in (out, whole))
    for k in x:
        torch.testing.assert_close(x[k], y[k], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rl.algo=dpo", "rl.algo grpo"),
        ("rl.rewards.semantic=1.0", "rl.rewards.semantic 0"),
        ("rl.tasks.title_to_sid=1.0", "sid_history only"),
        ("rl.per_device_batch_size=30", "dividing rl.per_device_batch_size"),
        ("rl.rewards.sasrec=1.0", "is not a finished `sidrec baseline sasrec` output"),
    ],
)
def test_bad_tree_rl_settings_fail_before_anything_is_written(
    small_run: dict,
    tree_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    override: str,
    message: str,
) -> None:
    out = tmp_path / "rl"
    assert _rl(small_run, tree_model, out, override) != 0
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not out.exists() and not work_dir(out).exists()


def test_force_target_is_refused_for_an_lm() -> None:
    from sidrec.core.errors import SidrecError
    from sidrec.rl.train import _check

    cfg = load_config(None, ["rl.force_target=true"])
    with pytest.raises(SidrecError, match="rl.force_target needs a tree model"):
        _check(cfg, None, None)


def test_dynamic_sampling_averages_over_the_groups_that_teach() -> None:
    from conftest import random_sids

    from sidrec.core.tree_model import TreeSID, Trie

    shape = {"hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0, "position": "learned"}
    torch.manual_seed(0)
    model = TreeSID(60, Trie(random_sids(60, levels=3, k=4)), {**shape, "max_len": 8,
                    "node_embeddings": True}).eval()  # fmt: skip
    seq = torch.randint(1, 61, (12, 5))
    with torch.no_grad():  # half the rows' targets are the model's top item: in their groups
        top = model.item_scores(model.encode(seq)[:, -1]).argmax(1)
    target = torch.cat([top[:6], torch.randint(0, 60, (6,))])
    r = {"num_generations": 4, "rollout": "beam", "temperature": 1.0, "force_target": False,
         "rewards": {"rule": 1.0}, "drop_zero_variance": False}  # fmt: skip
    shown_as = tree_rl.representatives(model)
    plain, log = tree_rl._step_loss(model, None, None, shown_as, seq, target, r)
    dropped, _ = tree_rl._step_loss(
        model, None, None, shown_as, seq, target, {**r, "drop_zero_variance": True}
    )
    kept = round((1 - log["zero_std"]) * 12)  # groups holding the target: rewards differ
    assert 0 < kept < 12
    torch.testing.assert_close(dropped, plain * 12 / kept)
