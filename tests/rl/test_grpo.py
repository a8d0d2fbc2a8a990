"""GRPO on the real TRL trainer with a tiny SFT model: every rollout is a catalog SID, a group
is the G beams of one prompt, the output is a model directory evaluate can use, and bad
settings fail before training."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from conftest import two_process_env

from sidrec.core.config import load_config
from sidrec.core.dataset import read_dataset
from sidrec.core.decoding import PrefixIndex, beam_search
from sidrec.core.errors import InputError, SidrecError
from sidrec.core.io import read_json
from sidrec.core.model_dir import load_sid_model, model_sids
from sidrec.core.prompts import PromptSpec
from sidrec.core.sids import sid_tokens
from sidrec.data.stage import synth
from sidrec.evaluate.generative import evaluate_model
from sidrec.rl import train as rl_train
from sidrec.rl.train import train_rl

G = 4
RL = [
    "swanlab.mode=disabled",
    "rl.max_steps=2",
    f"rl.num_generations={G}",
    "rl.per_device_batch_size=8",
    "rl.sample_size=32",
    "rl.logging_steps=1",
    "rl.learning_rate=0.001",
    "rl.eval_steps=1",
    "rl.save_steps=2",
    "rl.valid_users=16",
    "evaluate.max_users=16",
    "evaluate.num_beams=10",
]


@pytest.fixture
def rollouts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict]]:
    """Every rollout the test's runs make: (the prompts it got, what it returned)."""
    seen: list[tuple[list[str], dict]] = []
    real = rl_train.Rollout.__call__

    def record(self: rl_train.Rollout, prompts: list[str], trainer: object) -> dict:
        out = real(self, prompts, trainer)
        seen.append((prompts, out))
        return out

    monkeypatch.setattr(rl_train.Rollout, "__call__", record)
    return seen


def test_grpo_rollouts_are_groups_of_catalog_sids(
    tiny_model: dict, tmp_path: Path, rollouts: list[tuple[list[str], dict]]
) -> None:
    cfg = load_config(None, RL)
    manifest = train_rl(tiny_model["model"], tiny_model["data"], tmp_path / "rl", cfg)
    assert manifest["counts"]["steps"] == 2 and rollouts
    table, _ = model_sids(tiny_model["model"])
    model, tok = load_sid_model(tiny_model["model"], "cpu", False)
    index = PrefixIndex.for_tokenizer(table, tok, model.config.vocab_size)
    catalog = {tuple(tok.convert_tokens_to_ids(t) for t in _tokens(s)) for s in table.sids}
    for step, (prompts, out) in enumerate(rollouts):
        comps, sids, ranks = out["completion_ids"], out["beam_sid"], out["beam_rank"]
        assert len(comps) == len(prompts) == len(out["prompt_ids"])
        for c in comps:
            assert c[-1] == tok.eos_token_id and tuple(c[:-1]) in catalog
        for start in range(0, len(prompts), G):
            group = slice(start, start + G)
            assert len(set(prompts[group])) == 1  # one prompt per group
            assert ranks[group] == list(range(G)) and len(set(sids[group])) == G
            if step == 0:  # before any update: the G beams of the SFT model, best first
                head = cfg["decoding"]["head"]
                ids = [out["prompt_ids"][start]]
                top, _ = beam_search(model, index, ids, G, tok.pad_token_id, head)
                assert sids[group] == top[0].tolist()
    out = tmp_path / "rl"
    assert (out / "sids" / "index.json").is_file() and (out / "items.parquet").is_file()
    assert read_json(out / "prompting.json") == read_json(tiny_model["model"] / "prompting.json")
    log = read_json(out / "train_log.json")
    assert any("rewards/ranking/mean" in h and "frac_reward_zero_std" in h for h in log)
    assert all(h["rollout/seconds"] > 0 for h in log if "reward" in h)
    shares = [h["rollout/share_of_step"] for h in log if "rollout/share_of_step" in h]
    assert shares and all(0 < x < 1 for x in shares)
    # validation by ranking quality at every evaluation; the best checkpoint is kept
    ranked = [h for h in log if "eval_ndcg@10" in h]
    assert [h["step"] for h in ranked] == [1, 2]
    assert manifest["valid_ndcg10_best"] == max(h["eval_ndcg@10"] for h in ranked)
    results = evaluate_model(out, tiny_model["data"], None, tmp_path / "eval", cfg)
    assert results["users"] == 16


def test_restricted_rollouts_train_with_restricted_log_probs(
    tiny_model: dict,
    tmp_path: Path,
    rollouts: list[tuple[list[str], dict]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``decoding.head=restricted``: the rollouts are the restricted search's beams, and the
    log-probabilities GRPO trains with are normalised over each step's columns as theirs
    were: a SID's forced end-of-sequence costs exactly 0 (the full head gives it less)."""
    seen: list[torch.Tensor] = []
    real = rl_train.SidGRPOTrainer._get_per_token_logps_and_entropies

    def record(self: rl_train.SidGRPOTrainer, *args: object, **kwargs: object) -> tuple:
        out = real(self, *args, **kwargs)
        seen.append(out[0].detach())
        return out

    monkeypatch.setattr(rl_train.SidGRPOTrainer, "_get_per_token_logps_and_entropies", record)
    cfg = load_config(None, [*RL, "rl.eval_steps=0", "rl.max_steps=1", "decoding.head=restricted"])
    manifest = train_rl(tiny_model["model"], tiny_model["data"], tmp_path / "rl", cfg)
    assert manifest["counts"]["steps"] == 1 and rollouts and seen
    table, _ = model_sids(tiny_model["model"])
    model, tok = load_sid_model(tiny_model["model"], "cpu", False)
    index = PrefixIndex.for_tokenizer(table, tok, model.config.vocab_size)
    prompts, out = rollouts[0]
    top, _ = beam_search(model, index, [out["prompt_ids"][0]], G, tok.pad_token_id, "restricted")
    assert out["beam_sid"][:G] == top[0].tolist()
    depth = len(table.codebook_sizes)
    assert {len(c) for c in out["completion_ids"]} == {depth + 1}  # same-length SIDs
    for logp in seen:
        assert (logp[:, depth] == 0).all() and (logp[:, :depth] < 0).all()


def _tokens(sid: str) -> list[str]:
    return [t + ">" for t in sid.split(">") if t]


def test_bad_rl_settings_fail_before_training(tiny_model: dict, tmp_path: Path) -> None:
    args = (tiny_model["model"], tiny_model["data"], tmp_path / "rl")
    with pytest.raises(SidrecError, match="must be >= 2 and divide rl.per_device_batch_size=8"):
        train_rl(*args, load_config(None, [*RL, "rl.num_generations=3"]))
    with pytest.raises(SidrecError, match="exceeds the catalog's 120 distinct SIDs"):
        train_rl(
            *args,
            load_config(None, [*RL, "rl.num_generations=128", "rl.per_device_batch_size=128"]),
        )
    with pytest.raises(SidrecError, match="semantic needs item embeddings"):
        train_rl(*args, load_config(None, [*RL, "rl.rewards.semantic=1.0"]))
    assert not (tmp_path / "rl").exists() and not (tmp_path / "rl.partial").exists()


def test_an_interrupted_run_resumes_from_its_checkpoint(
    tiny_model: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import Trainer

    cfg = load_config(None, [*RL, "rl.max_steps=4", "rl.save_steps=2", "rl.eval_steps=2"])
    real = Trainer._save_checkpoint

    def save_then_die(self: Trainer, *args: object, **kwargs: object) -> None:
        real(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_rl(tiny_model["model"], tiny_model["data"], tmp_path / "rl", cfg)
    monkeypatch.undo()
    assert not (tmp_path / "rl").exists()
    with pytest.raises(SidrecError, match="pass --resume"):
        train_rl(tiny_model["model"], tiny_model["data"], tmp_path / "rl", cfg)
    manifest = train_rl(tiny_model["model"], tiny_model["data"], tmp_path / "rl", cfg, resume=True)
    assert manifest["resumed_from"] == "checkpoint-2" and manifest["counts"]["steps"] == 4


def test_sampled_rollouts_title_tasks_and_dynamic_sampling(
    tiny_model: dict, tmp_path: Path, rollouts: list[tuple[list[str], dict]]
) -> None:
    """``rl.rollout=sample``: groups of G constrained samples (catalog SIDs, ranked by the
    model's score); title-task prompts hold the title only, their target is the SID of the
    example's own completion; with dynamic sampling the kept share is logged and is exactly
    the share of groups whose rewards differ."""
    examples = tiny_model["model"].parent / "examples"
    cfg = load_config(
        None,
        [
            *RL,
            "rl.rollout=sample",
            "rl.temperature=1.5",
            "rl.drop_zero_variance=true",
            "rl.loss_type=bnpo",
            "rl.tasks.title_to_sid=1",
            "rl.rewards.rule=1",
            "rl.eval_steps=0",
            "rl.max_steps=3",
        ],
    )
    manifest = train_rl(
        tiny_model["model"], tiny_model["data"], tmp_path / "rl", cfg, examples=examples
    )
    counts = manifest["counts"]
    assert counts["rows_sid_history"] > 0 and counts["rows_title_to_sid"] > 0
    assert manifest["inputs"]["examples"] == str(examples)
    table, _ = model_sids(tiny_model["model"])
    tok = load_sid_model(tiny_model["model"], "cpu", False)[1]
    catalog = {tuple(tok.convert_tokens_to_ids(_tokens(s))) for s in table.sids}
    for _, out in rollouts:
        for c in out["completion_ids"]:
            assert c[-1] == tok.eos_token_id and tuple(c[:-1]) in catalog
        assert out["beam_rank"][:G] == list(range(G))
    # the training rows: a title prompt has no SID token; its target is its completion's SID
    rows = rl_train.training_rows
    index = PrefixIndex.for_tokenizer(table, tok, len(tok))
    ds, _ = read_dataset(tiny_model["data"])
    spec = PromptSpec.load(tiny_model["model"])
    train, _ = rows(ds, examples, table, index.catalog.item_sid, spec, tok, index.depth + 1, cfg)
    titles = pl.read_parquet(examples / "train.parquet").filter(pl.col("task") == "title_to_sid")
    want = {p: c for p, c in zip(titles["prompt"], titles["completion"], strict=True)}
    checked = 0
    for prompt, target, task in zip(train["prompt"], train["target"], train["task"], strict=True):
        if task != "title_to_sid":
            continue
        assert "<a_" not in prompt and "<b_" not in prompt
        text = next(p for p in want if p in prompt)
        assert "".join(sid_tokens(index.catalog.codes[target])) == want[text]
        checked += 1
    assert checked == counts["rows_title_to_sid"]
    log = read_json(tmp_path / "rl" / "train_log.json")
    steps = [h for h in log if "dynamic_sampling/kept_share" in h]
    assert len(steps) == 3
    for h in steps:
        assert h["dynamic_sampling/kept_share"] == pytest.approx(1 - h["frac_reward_zero_std"])


def test_dpo_pairs_train_and_the_model_evaluates(tiny_model: dict, tmp_path: Path) -> None:
    cfg = load_config(None, [*RL, "rl.algo=dpo", "rl.dpo.rejected=2", "rl.per_device_batch_size=4"])
    manifest = train_rl(tiny_model["model"], tiny_model["data"], tmp_path / "dpo", cfg)
    pairs = pl.read_parquet(tmp_path / "dpo" / "dpo_pairs" / "train.parquet")
    assert manifest["algo"] == "dpo" and manifest["counts"]["dpo_pairs"] == pairs.height
    assert pairs.height >= 32 * 1  # at least one wrong beam per prompt, at most two
    assert pairs.group_by("prompt").len()["len"].max() <= 2
    table, _ = model_sids(tiny_model["model"])
    model, tok = load_sid_model(tiny_model["model"], "cpu", False)
    index = PrefixIndex.for_tokenizer(table, tok, model.config.vocab_size)
    text = ["".join(sid_tokens(c)) for c in index.catalog.codes]
    assert (pairs["target"] != pairs["rejected_sid"]).all()
    assert pairs["chosen"].to_list() == [text[t] for t in pairs["target"]]
    first = pairs.row(0, named=True)
    ids = tok(first["prompt"], add_special_tokens=False)["input_ids"]
    top, _ = beam_search(model, index, [ids], 3, tok.pad_token_id, cfg["decoding"]["head"])
    beams = top[0].tolist()
    assert beams[first["rejected_rank"]] == first["rejected_sid"] != first["target"]
    # the rejected of a prompt are its best wrong beams, in order
    assert first["rejected_sid"] == [s for s in beams if s != first["target"]][0]
    log = read_json(tmp_path / "dpo" / "train_log.json")
    assert any("eval_ndcg@10" in h for h in log) and any("rewards/margins" in h for h in log)
    results = evaluate_model(tmp_path / "dpo", tiny_model["data"], None, tmp_path / "eval", cfg)
    assert results["users"] == 16


def test_bad_inputs_fail_before_training(tiny_model: dict, tmp_path: Path) -> None:
    args = (tiny_model["model"], tiny_model["data"], tmp_path / "rl")
    with pytest.raises(SidrecError, match="sasrec needs a trained SASRec"):
        train_rl(*args, load_config(None, [*RL, "rl.rewards.sasrec=1"]))
    with pytest.raises(SidrecError, match="title_to_sid needs the SFT examples"):
        train_rl(*args, load_config(None, [*RL, "rl.tasks.title_to_sid=1"]))
    with pytest.raises(SidrecError, match="rl.algo must be one of"):
        train_rl(*args, load_config(None, [*RL, "rl.algo=ppo"]))
    # a dataset of another catalog
    synth(tmp_path / "other", n_items=110, n_users=80, seed=1)
    with pytest.raises(InputError, match="has 110 items, the model's SIDs 120"):
        train_rl(tiny_model["model"], tmp_path / "other", tmp_path / "rl", load_config(None, RL))
    # a model directory whose tokenizer lost its SID tokens
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model["model"], bare)
    spec = json.loads((bare / "tokenizer.json").read_text())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"][:3] not in SID_HEADS]
    (bare / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(SidrecError, match="lacks SID tokens"):
        train_rl(bare, tiny_model["data"], tmp_path / "rl", load_config(None, RL))
    assert not (tmp_path / "rl").exists() and not (tmp_path / "rl.partial").exists()


SID_HEADS = {"<a_", "<b_", "<c_", "<d_"}


def test_two_processes_train_through_the_launch_script(tiny_model: dict, tmp_path: Path) -> None:
    """scripts/rl.sh with torchrun: two CPU processes meet over gloo (DDP), each rolling out
    its own groups; validation and the published model come from the main process."""
    cfg_file = tmp_path / "cfg.yaml"
    cfg = load_config(None, [*RL, "rl.eval_steps=2"])
    cfg_file.write_text(yaml.safe_dump({k: cfg[k] for k in ("rl", "evaluate", "swanlab")}))
    out = tmp_path / "rl"
    env = two_process_env()
    script = Path(__file__).resolve().parents[2] / "scripts" / "rl.sh"
    args = ["--model", str(tiny_model["model"]), "--data", str(tiny_model["data"])]
    run = subprocess.run(
        ["bash", str(script), str(cfg_file), *args, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = read_json(out / "manifest.json")
    assert manifest["processes"] == 2 and manifest["counts"]["steps"] == 2
    log = read_json(out / "train_log.json")
    assert [h["step"] for h in log if "eval_ndcg@10" in h] == [2]
    assert sum("reward" in h for h in log) >= 2
