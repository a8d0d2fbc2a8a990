"""The one-shot pipeline through SFT and evaluation: on synthetic data with an extended Qwen2
tokenizer, and on Beauty with LETTER's SIDs, a SID-only vocabulary and whole-sequence
training."""

from pathlib import Path

import pytest
from conftest import tiny_demo
from transformers import AutoModelForCausalLM

from sidrec.app.pipeline import StageRun, format_summary, run_pipeline
from sidrec.core.config import load_config
from sidrec.core.io import read_json
from sidrec.core.model_dir import load_tokenizer
from sidrec.core.prompts import PromptSpec

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = [
    "model.family=lm",
    "rl.enabled=true",
    "model.tiny_qwen2.hidden_size=32",
    "model.tiny_qwen2.intermediate_size=64",
    "model.tiny_qwen2.num_hidden_layers=1",
    "swanlab.mode=disabled",
    "sft.max_steps=4",
    "sft.eval_steps=2",
    "convert.max_valid_examples=32",
    "evaluate.max_users=64",
    # the profiles keep checkpoints by validation NDCG@10: 10 beams, a small sample
    "evaluate.num_beams=10",
    "sft.valid_users=32",
    "rl.max_steps=2",
    "rl.sample_size=16",
    "rl.num_generations=4",
    "rl.per_device_batch_size=8",
    "rl.eval_steps=0",
]


def test_demo_pipeline_runs_through_sft_and_rl(tmp_path: Path) -> None:
    overrides = [*tiny_demo(tmp_path), *TINY_MODEL]
    cfg = load_config(REPO / "configs" / "demo.yaml", overrides)
    logs: list[str] = []
    runs: list[StageRun] = []
    outputs = run_pipeline(cfg, log=logs.append, runs=runs)
    assert list(outputs) == [
        "data",
        "embeddings",
        "sid",
        "examples",
        "sft",
        "evaluate",
        "rl",
        "evaluate_rl",
        "analyze",
        "suggest",
    ]
    manifest = read_json(outputs["sft"] / "manifest.json")
    assert manifest["counts"]["steps"] == 4 and manifest["base_model"] == "tiny-qwen2"
    assert manifest["format"] == "sequence"  # the demo trains whole sequences
    rl = read_json(outputs["rl"] / "manifest.json")
    assert rl["counts"]["steps"] == 2 and rl["base_model"] == str(outputs["sft"])
    for name, model in (("evaluate", "sft"), ("evaluate_rl", "rl")):
        results = read_json(outputs[name] / "results.json")
        assert results["users"] == 64 and results["ks"] == [1, 3, 5, 10]
        assert set(results["baselines"]) == {"popularity", "item_to_item"}
        assert read_json(outputs[name] / "manifest.json")["inputs"]["model"] == str(outputs[model])
    assert sum(m.startswith("test (64 users") for m in logs) == 2
    # the report is of the last model, the RL one; the overlay is one the stages accept
    report = read_json(outputs["analyze"] / "badcase_report.json")
    assert report["evaluation"] == str(outputs["evaluate_rl"]) and report["top_k"] == 10
    load_config(REPO / "configs" / "demo.yaml", overlays=[outputs["suggest"] / "suggested.yaml"])
    table = format_summary(runs)
    assert [line.split()[0] for line in table.splitlines()[1:11]] == list(outputs)
    for row in ("sft (evaluate)", "rl (evaluate_rl)", "popularity", "item-to-item"):
        assert row in table
    logs.clear()
    runs.clear()
    run_pipeline(cfg, log=logs.append, runs=runs)
    states = [m.split()[1] for m in logs if m.startswith("[") and "not needed" not in m]
    assert states == ["complete"] * 10 and "[sasrec] not needed for this config" in logs
    assert {r.action for r in runs} == {"reused"}
    # RL off: the SFT model's evaluation is the one analysed
    logs.clear()
    outputs = run_pipeline(
        load_config(REPO / "configs" / "demo.yaml", [*overrides, "rl.enabled=false"]),
        log=logs.append,
    )
    assert "[rl] not needed for this config" in logs and "evaluate_rl" not in outputs
    report = read_json(outputs["analyze"] / "badcase_report.json")
    assert report["evaluation"] == str(outputs["evaluate"])


def test_a_tree_pipeline_distils_the_sasrec_it_trains_first(tmp_path: Path) -> None:
    tree = ["model.family=tree", "tree.teacher=sasrec", "tree.epochs=2", "tree.hidden=16"]
    fast = ["sasrec.epochs=2", "sasrec.hidden=16", "rl.enabled=false"]
    cfg = load_config(
        REPO / "configs" / "demo.yaml", [*tiny_demo(tmp_path), *TINY_MODEL, *tree, *fast]
    )
    logs: list[str] = []
    outputs = run_pipeline(cfg, log=logs.append)
    assert list(outputs) == [
        "data",
        "embeddings",
        "sid",
        "sasrec",
        "sft",
        "evaluate",
        "analyze",
        "suggest",
    ]
    assert "[examples] not needed for this config" in logs
    manifest = read_json(outputs["sft"] / "manifest.json")
    assert manifest["family"] == "tree" and manifest["teacher"] == str(outputs["sasrec"])
    results = read_json(outputs["evaluate"] / "results.json")
    assert results["family"] == "tree" and results["users"] == 64
    # with RL on, the finished stages are reused and the tree model's RL and its evaluation run
    rl = ["rl.enabled=true", "rl.max_steps=4", "rl.eval_steps=2", "rl.num_generations=4"]
    logs.clear()
    outputs = run_pipeline(
        load_config(
            REPO / "configs" / "demo.yaml",
            [
                *tiny_demo(tmp_path),
                *TINY_MODEL,
                *tree,
                *fast[:2],
                *rl,
                "rl.per_device_batch_size=32",
            ],
        ),
        log=logs.append,
    )
    assert list(outputs)[-4:] == ["rl", "evaluate_rl", "analyze", "suggest"]
    assert read_json(outputs["rl"] / "manifest.json")["family"] == "tree"
    assert read_json(outputs["evaluate_rl"] / "results.json")["family"] == "tree"
    assert any(line.startswith("[sft] complete and unchanged") for line in logs)


def test_beauty_config_trains_on_whole_sequences(
    tmp_path: Path, letter_src: Path, beauty_titles: Path
) -> None:
    cfg = load_config(
        REPO / "configs" / "beauty.yaml",
        [
            f"output_root={tmp_path}",
            f"data.letter.src={letter_src}",
            f"data.letter.titles={beauty_titles / 'Beauty.titles.json'}",
            f"data.letter.asins={beauty_titles / 'Beauty.item2asin.tsv'}",
            *TINY_MODEL,
            "model.family=lm",  # the profile's LM recipe (it ships the tree family)
        ],
    )
    outputs = run_pipeline(cfg, log=lambda _: None)
    assert "embeddings" not in outputs  # LETTER's SIDs are used as shipped
    examples = read_json(outputs["examples"] / "manifest.json")
    assert examples["counts"]["train"]["sid_sequence"] >= 22_363  # one per user, + windows
    tok = load_tokenizer(outputs["sft"])
    assert len(tok) == 3 + 4 * 256  # specials + the SID tokens, nothing else
    assert len(tok("<a_1><b_2><c_3><d_4>")["input_ids"]) == 4
    model = AutoModelForCausalLM.from_pretrained(outputs["sft"])
    assert model.config.vocab_size == len(tok)
    spec = PromptSpec.load(outputs["sft"])
    assert spec.format == "sequence" and not spec.chat_template
    assert spec.history_text(["<a_1><b_2><c_3><d_4>"]) == "<a_1><b_2><c_3><d_4>"
    results = read_json(outputs["evaluate"] / "results.json")
    assert results["users"] == 64 and results["shared_sids"] == 11


@pytest.mark.slow
def test_smollm2_runs_a_few_sft_steps(tmp_path: Path) -> None:
    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        [
            f"output_root={tmp_path}",
            "model.name_or_path=smollm2-135m",
            "data.synth.n_items=150",
            "data.synth.n_users=120",
            "embed.max_seq_length=32",
            "sid.codebook_size=8",
            "swanlab.mode=disabled",
            "sft.max_steps=3",
            "sft.eval_steps=3",
            "sft.global_batch_size=4",
            "sft.per_device_batch_size=4",
            "sft.learning_rate=0.0001",
            "convert.max_valid_examples=8",
        ],
    )
    outputs = run_pipeline(cfg, log=lambda _: None)
    manifest = read_json(outputs["sft"] / "manifest.json")
    assert manifest["counts"]["steps"] == 3 and manifest["base_model"] == "smollm2-135m"
    assert manifest["eval_loss_last"] < manifest["eval_loss_first"]
