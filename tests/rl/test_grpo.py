"""GRPO on the real TRL trainer with a tiny SFT model: every rollout is a catalog SID, a group
is the G beams of one prompt, the output is a model directory evaluate can use, and bad
settings fail before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidrec.config import load_config
from sidrec.decoding import PrefixIndex, beam_search
from sidrec.errors import SidrecError
from sidrec.evaluate.generative import evaluate_model
from sidrec.io import read_json
from sidrec.model_dir import load_sid_model, model_sids
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


def test_grpo_rollouts_are_groups_of_catalog_sids(
    tiny_model: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[list[str], dict]] = []
    real = rl_train.BeamRollout.__call__

    def record(self: rl_train.BeamRollout, prompts: list[str], trainer: object) -> dict:
        out = real(self, prompts, trainer)
        seen.append((prompts, out))
        return out

    monkeypatch.setattr(rl_train.BeamRollout, "__call__", record)
    cfg = load_config(None, RL)
    manifest = train_rl(tiny_model["model"], tiny_model["data"], tmp_path / "rl", cfg)
    assert manifest["counts"]["steps"] == 2 and seen
    table, _ = model_sids(tiny_model["model"])
    model, tok = load_sid_model(tiny_model["model"], "cpu", False)
    index = PrefixIndex.for_tokenizer(table, tok, model.config.vocab_size)
    catalog = {tuple(tok.convert_tokens_to_ids(t) for t in _tokens(s)) for s in table.sids}
    for step, (prompts, out) in enumerate(seen):
        comps, sids, ranks = out["completion_ids"], out["beam_sid"], out["beam_rank"]
        assert len(comps) == len(prompts) == len(out["prompt_ids"])
        for c in comps:
            assert c[-1] == tok.eos_token_id and tuple(c[:-1]) in catalog
        for start in range(0, len(prompts), G):
            group = slice(start, start + G)
            assert len(set(prompts[group])) == 1  # one prompt per group
            assert ranks[group] == list(range(G)) and len(set(sids[group])) == G
            if step == 0:  # before any update: the G beams of the SFT model, best first
                top, _ = beam_search(model, index, [out["prompt_ids"][start]], G, tok.pad_token_id)
                assert sids[group] == top[0].tolist()
    out = tmp_path / "rl"
    assert (out / "sids" / "index.json").is_file() and (out / "items.parquet").is_file()
    assert read_json(out / "prompting.json") == read_json(tiny_model["model"] / "prompting.json")
    log = read_json(out / "train_log.json")
    assert any("rewards/ranking/mean" in h and "frac_reward_zero_std" in h for h in log)
    # validation by ranking quality at every evaluation; the best checkpoint is kept
    ranked = [h for h in log if "eval_ndcg@10" in h]
    assert [h["step"] for h in ranked] == [1, 2]
    assert manifest["valid_ndcg10_best"] == max(h["eval_ndcg@10"] for h in ranked)
    results = evaluate_model(out, tiny_model["data"], None, tmp_path / "eval", cfg)
    assert results["users"] == 16


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
