import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from conftest import TINY_QWEN2, two_process_env
from transformers import AutoModelForCausalLM, AutoTokenizer

from sidrec.core.config import load_config
from sidrec.core.errors import SidrecError
from sidrec.core.io import read_json
from sidrec.core.model_dir import sid_hash
from sidrec.core.prompts import PromptSpec
from sidrec.core.sids import read_sid_dir
from sidrec.sft.convert import convert
from sidrec.sft.models import add_sid_tokens, load_base_model, sid_vocabulary
from sidrec.sft.train import (
    CompletionWindowCollator,
    add_dropout,
    tokenize_examples,
    train_sft,
)

TINY = [
    *TINY_QWEN2,
    "convert.max_valid_examples=48",
    "sft.global_batch_size=16",
    "sft.per_device_batch_size=8",
    "sft.learning_rate=0.003",
    "sft.eval_steps=10",
    "sft.logging_steps=5",
]


def _cfg(cache: Path, *overrides: str) -> dict:
    return load_config(None, [*TINY, f"model.cache_dir={cache}", *overrides])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def examples(small_run: dict[str, Path], cache: Path) -> Path:
    out = small_run["root"] / "examples"
    convert(small_run["data"], small_run["sid"], out, _cfg(cache))
    return out


def test_completion_mask_and_window(small_run: dict[str, Path], cache: Path) -> None:
    model, tok = load_base_model(_cfg(cache))
    table = read_sid_dir(small_run["sid"])
    add_sid_tokens(model, tok, table)
    df = pl.DataFrame(
        {
            "prompt": ["Next after <a_1><b_2><c_3>?", "<a_1><b_2><c_3>"],
            "completion": ["<a_4><b_5><c_6>", "<a_0><b_0><c_1><a_2><b_2><c_2>"],
            "task": ["sid_history", "sid_sequence"],
            "template": ["Next after {history}?", ""],
            "history": [["<a_1><b_2><c_3>"], []],
        }
    )
    data, fitted = tokenize_examples(df, tok, chat=True, max_length=512, item_separator=", ")
    assert fitted == {"truncated": 0, "dropped_too_long": 0}
    ids, mask = data["input_ids"][0], data["completion_mask"][0]
    sid = tok.convert_tokens_to_ids(["<a_4>", "<b_5>", "<c_6>"])
    assert [i for i, m in zip(ids, mask, strict=True) if m] == [*sid, tok.eos_token_id]
    assert tok.decode(ids[: mask.index(1)]).startswith("<|im_start|>user\nNext after")
    seq_ids, seq_mask = data["input_ids"][1], data["completion_mask"][1]
    assert sum(seq_mask) == 6 and seq_ids[-1] != tok.eos_token_id  # no chat, no EOS
    assert len(seq_ids) == 9
    _, too_long = tokenize_examples(df[:1], tok, chat=True, max_length=8, item_separator=", ")
    assert too_long == {"truncated": 0, "dropped_too_long": 1}  # not even an empty history fits
    with pytest.raises(SidrecError, match="training window is 9 tokens.*data.max_history"):
        tokenize_examples(df[1:], tok, chat=False, max_length=8, item_separator=", ")

    # the collator's window holds every label; the loss equals the full-logits loss
    labels = [
        [-100 if m == 0 else t for t, m in zip(i, k, strict=True)]
        for i, k in zip(data["input_ids"], data["completion_mask"], strict=True)
    ]
    batch = CompletionWindowCollator(tok.pad_token_id)(
        [{"input_ids": i, "labels": lab} for i, lab in zip(data["input_ids"], labels, strict=True)]
    )
    assert batch["logits_to_keep"] == 7 and batch["labels"].shape == (2, 7)
    assert (batch["labels"] != -100).sum() == 4 + 6
    with torch.no_grad():
        windowed = model(**batch).loss
        full = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            labels=torch.nn.functional.pad(
                batch["labels"], (batch["input_ids"].shape[1] - 7, 0), value=-100
            ),
        ).loss
    assert torch.allclose(windowed, full, atol=1e-5)


def test_long_history_loses_its_oldest_items_as_in_evaluation(
    small_run: dict[str, Path], cache: Path
) -> None:
    """A prompt too long for sft.max_length keeps its newest items, and training and
    evaluation cut the same history to the same tokens."""
    model, tok = load_base_model(_cfg(cache))
    table = read_sid_dir(small_run["sid"])
    add_sid_tokens(model, tok, table)
    history = table.sids[:12]
    spec = PromptSpec("prompt", "Items: {history}. Next?", ", ", True, 20, 512)
    full, cut = spec.encode(tok, history, 4)
    assert cut == 0
    spec = PromptSpec("prompt", "Items: {history}. Next?", ", ", True, 20, len(full) - 3)
    ids, cut = spec.encode(tok, history, 4)
    assert cut > 0 and len(ids) + 4 <= spec.max_length
    assert ids == spec.encode(tok, history[cut:], 4)[0]  # the newest items are kept
    df = pl.DataFrame(
        {
            "prompt": [spec.history_text(history)],
            "completion": [table.sids[20]],
            "task": ["sid_history"],
            "template": [spec.template],
            "history": [history],
        }
    )
    data, fitted = tokenize_examples(df, tok, True, spec.max_length, ", ")
    assert fitted == {"truncated": 1, "dropped_too_long": 0}
    mask = data["completion_mask"][0]
    assert data["input_ids"][0][: mask.index(1)] == ids
    shorter = PromptSpec("prompt", spec.template, ", ", True, 5, 512)
    assert shorter.encode(tok, history, 4) == (shorter.encode(tok, history[-5:], 4)[0], 7)


def test_sft_trains_and_writes_a_complete_model(
    examples: Path, small_run: dict[str, Path], cache: Path, tmp_path: Path
) -> None:
    cfg = _cfg(cache, "sft.max_steps=40", "swanlab.mode=local", f"output_root={tmp_path}")
    out = tmp_path / "sft"
    manifest = train_sft(examples, out, cfg)
    assert manifest["eval_loss_best"] < manifest["eval_loss_first"] - 1.0  # it learns
    assert manifest["counts"]["steps"] == 40
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
        "prompting.json",
        "train_log.json",
        "config.yaml",
        "manifest.json",
    ):
        assert (out / name).is_file(), name
    # the dashboard's run is with every other run of the output root, not in the model
    assert any((tmp_path / "swanlog").iterdir()) and not (out / "swanlog").exists()
    assert not (out / "checkpoints").exists() and not (tmp_path / "sft.partial").exists()
    # the model carries the SIDs it was trained on and the catalog
    assert read_sid_dir(out / "sids").codes == read_sid_dir(small_run["sid"]).codes
    assert manifest["sid_hash"] == sid_hash(read_sid_dir(small_run["sid"]))
    assert pl.read_parquet(out / "items.parquet").height == 120
    tok = AutoTokenizer.from_pretrained(out)
    table = read_sid_dir(small_run["sid"])
    sid = table.sids[0]
    assert len(tok(sid, add_special_tokens=False)["input_ids"]) == len(table.codes[0])
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size >= len(tok)
    assert model.generation_config.do_sample is False
    spec = PromptSpec.load(out)
    assert spec.chat_template and "{history}" in spec.template
    log = read_json(out / "train_log.json")
    assert any("train_tokens_per_second" in h for h in log) and any("eval_loss" in h for h in log)
    with pytest.raises(SidrecError, match="already complete"):
        train_sft(examples, out, cfg)


def test_embeddings_mode_moves_only_sid_rows(
    examples: Path, small_run: dict[str, Path], cache: Path, tmp_path: Path
) -> None:
    # a template changed after the examples were made: the model records the examples' own
    cfg = _cfg(
        cache,
        "sft.max_steps=3",
        "sft.mode=embeddings",
        "convert.templates.sid_history=['Changed: {history}']",
    )
    train_sft(examples, tmp_path / "sft", cfg)
    assert PromptSpec.load(tmp_path / "sft").template == PromptSpec.load(examples).template
    assert not PromptSpec.load(tmp_path / "sft").template.startswith("Changed")
    table = read_sid_dir(small_run["sid"])
    base, tok = load_base_model(cfg, cfg["seed"], table)
    add_sid_tokens(base, tok, table)
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "sft")
    rows = tok.convert_tokens_to_ids(sid_vocabulary(table))
    before = base.get_input_embeddings().weight
    after = tuned.get_input_embeddings().weight
    other = torch.ones(before.shape[0], dtype=torch.bool)
    other[rows] = False
    assert torch.equal(before[other], after[other])
    assert not torch.allclose(before[rows], after[rows])
    for (name, p), q in zip(
        base.model.layers.named_parameters(), tuned.model.layers.parameters(), strict=True
    ):
        assert torch.equal(p, q), name


def test_lora_mode_is_merged(
    examples: Path, small_run: dict[str, Path], cache: Path, tmp_path: Path
) -> None:
    # target_modules takes a list as well as "all-linear"
    cfg = _cfg(
        cache,
        "sft.max_steps=3",
        "sft.mode=lora",
        "sft.lora.r=4",
        "sft.lora.target_modules=[q_proj, down_proj]",
    )
    train_sft(examples, tmp_path / "sft", cfg)
    assert not (tmp_path / "sft" / "adapter_config.json").exists()
    table = read_sid_dir(small_run["sid"])
    base, tok = load_base_model(cfg, cfg["seed"], table)
    add_sid_tokens(base, tok, table)
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "sft")
    rows = tok.convert_tokens_to_ids(sid_vocabulary(table))
    assert not torch.allclose(
        base.get_input_embeddings().weight[rows], tuned.get_input_embeddings().weight[rows]
    )
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base.state_dict()[q], tuned.state_dict()[q])
    k = "model.layers.0.self_attn.k_proj.weight"  # not a target: unchanged
    assert torch.equal(base.state_dict()[k], tuned.state_dict()[k])


def test_accelerate_configs_leave_precision_to_the_config() -> None:
    """sft.bf16 decides precision; the launch configs must not force it."""
    for name in ("zero2.yaml", "ddp.yaml"):
        conf = yaml.safe_load(
            (Path(__file__).parents[2] / "configs" / "accelerate" / name).read_text()
        )
        assert conf["mixed_precision"] == "no", name


def test_the_best_checkpoint_by_validation_ndcg(
    examples: Path, cache: Path, tmp_path: Path
) -> None:
    """sft.select_by=ndcg@10: every evaluation decodes the validation sample with constrained
    beam search, logs HR@K / NDCG@K, and the kept model is the checkpoint with the best NDCG@10."""
    cfg = _cfg(
        cache,
        "sft.max_steps=30",
        "sft.select_by=ndcg@10",
        "sft.valid_users=24",
        "evaluate.num_beams=10",
        "sft.early_stopping_patience=0",
    )
    manifest = train_sft(examples, tmp_path / "sft", cfg)
    log = read_json(tmp_path / "sft" / "train_log.json")
    ranked = [h for h in log if "eval_ndcg@10" in h]
    assert [h["step"] for h in ranked] == [0, 10, 20, 30]  # eval_on_start, then every 10
    assert all(0 <= h["eval_ndcg@10"] <= h["eval_hr@10"] <= 1 for h in ranked)
    best = max(ranked[1:], key=lambda h: h["eval_ndcg@10"])  # checkpoints exist from step 10
    assert manifest["select_by"] == "ndcg@10"
    assert manifest["best_metric"] == best["eval_ndcg@10"]
    assert manifest["best_checkpoint"] == f"checkpoint-{best['step']}"


def test_bad_settings_fail_before_training(examples: Path, cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    with pytest.raises(
        SidrecError,
        match="global_batch_size=20 must be a positive multiple of per_device_batch_size=8",
    ):
        train_sft(examples, out, _cfg(cache, "sft.global_batch_size=20"))
    with pytest.raises(SidrecError, match="select_by must be one of"):
        train_sft(examples, out, _cfg(cache, "sft.select_by=recall"))
    with pytest.raises(SidrecError, match="sft.mode must be one of"):
        train_sft(examples, out, _cfg(cache, "sft.mode=half"))
    # transformers reads a warmup of 1 or more as steps: a ratio of 1.0 would be one step
    with pytest.raises(SidrecError, match=r"warmup_ratio is a fraction .* \[0, 1\), got 1.0"):
        train_sft(examples, out, _cfg(cache, "sft.warmup_ratio=1.0"))
    with pytest.raises(SidrecError, match="holds sft.format=prompt examples"):
        train_sft(examples, out, _cfg(cache, "sft.format=sequence"))
    with pytest.raises(SidrecError, match="base model path does not exist"):
        train_sft(examples, out, _cfg(cache, f"model.name_or_path={tmp_path / 'none'}"))
    assert not out.exists()


def _cli(cfg_file: Path, examples: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sidrec.app.cli",
        "sft",
        "--config",
        str(cfg_file),
        "--examples",
        str(examples),
        "--out",
        str(out),
        *extra,
    ]


def test_killed_run_resumes_from_its_last_checkpoint(
    examples: Path, cache: Path, tmp_path: Path
) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    overrides = _cfg(cache, "sft.max_steps=60", "sft.eval_steps=5")
    cfg_file.write_text(
        yaml.safe_dump({k: overrides[k] for k in ("model", "sft", "swanlab", "convert")})
    )
    out = tmp_path / "sft"
    proc = subprocess.Popen(
        _cli(cfg_file, examples, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    work = tmp_path / "sft.partial"
    while not list(work.glob("checkpoints/checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, "training ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # nothing that looks finished
    again = subprocess.run(_cli(cfg_file, examples, out), capture_output=True, text=True)
    assert again.returncode == 2 and "pass --resume" in again.stderr
    resumed = subprocess.run(
        _cli(cfg_file, examples, out, "--resume"), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    manifest = read_json(out / "manifest.json")
    assert manifest["resumed_from"].startswith("checkpoint-")
    assert int(manifest["resumed_from"].split("-")[1]) < 60
    assert manifest["counts"]["steps"] == 60


def test_two_processes_train_through_the_launch_script(
    examples: Path, cache: Path, tmp_path: Path
) -> None:
    """scripts/sft.sh with torchrun: two CPU processes meet over gloo (DDP), one global batch."""
    cfg_file = tmp_path / "cfg.yaml"
    cfg = _cfg(cache, "sft.max_steps=6", "sft.eval_steps=3")
    cfg_file.write_text(yaml.safe_dump({k: cfg[k] for k in ("model", "sft", "swanlab", "convert")}))
    out = tmp_path / "sft"
    env = two_process_env()
    script = Path(__file__).resolve().parents[2] / "scripts" / "sft.sh"
    run = subprocess.run(
        ["bash", str(script), str(cfg_file), "--examples", str(examples), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = read_json(out / "manifest.json")
    assert manifest["processes"] == 2
    assert manifest["gradient_accumulation_steps"] == 1  # 16 = 8 per device x 2 processes
    assert manifest["counts"]["steps"] == 6
    assert AutoModelForCausalLM.from_pretrained(out).config.vocab_size > 151_000


def test_dropout_acts_only_in_training(cache: Path) -> None:
    model, _ = load_base_model(_cfg(cache))
    ids = torch.arange(3, 40)[None]
    model.eval()
    with torch.no_grad():
        clean = model(ids).logits
    add_dropout(model, 0.5, 0.5)
    emb = model.get_input_embeddings()
    model.train()
    assert (emb(ids) == 0).float().mean() > 0.3
    down = model.model.layers[0].mlp.down_proj
    assert (down(torch.ones(1, down.in_features)) == 0).float().mean() > 0.3
    model.eval()
    assert torch.equal(emb(ids), emb.weight[ids])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, clean)


def test_residual_dropout_needs_llama_style_sublayers() -> None:
    with pytest.raises(SidrecError, match="residual_dropout.*Sequential"):
        add_dropout(torch.nn.Sequential(torch.nn.Embedding(4, 2)), 0.0, 0.1)


def test_time_budget_ends_training_at_a_saved_and_evaluated_step(
    examples: Path, cache: Path, tmp_path: Path
) -> None:
    # 1,000 steps asked for, 0.06 s of budget: training ends after its first step, which is
    # evaluated and saved, so the published model is that step's
    cfg = _cfg(cache, "sft.max_steps=1000", "sft.eval_steps=500", "sft.max_minutes=0.001")
    manifest = train_sft(examples, tmp_path / "sft", cfg)
    assert manifest["best_checkpoint"] == "checkpoint-1"
    assert manifest["eval_loss_first"] is not None
    log = read_json(tmp_path / "sft" / "train_log.json")
    assert max(r.get("step", 0) for r in log) == 1
