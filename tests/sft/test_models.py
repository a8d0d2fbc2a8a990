from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig, ViTConfig

from sidrec.core.config import load_config
from sidrec.core.errors import InputError, SidrecError
from sidrec.core.sids import SidTable
from sidrec.sft.models import add_sid_tokens, load_base_model, sid_vocabulary


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def _cfg(cache: Path, name: str = "tiny-qwen2") -> dict:
    return load_config(None, [f"model.name_or_path={name}", f"model.cache_dir={cache}"])


def test_tiny_qwen2_has_qwen2s_real_tokenizer(cache: Path) -> None:
    model, tok = load_base_model(_cfg(cache), seed=0)
    assert tok("Hello world")["input_ids"] == [9707, 1879]  # as Qwen2's own tokenizer
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [
        151643,
        151644,
        151645,
    ]
    assert 1e6 < model.num_parameters() < 2e7
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    again, _ = load_base_model(_cfg(cache), seed=0)
    assert torch.equal(model.lm_head.weight, again.lm_head.weight)  # seeded


def test_generation_defaults_are_never_inherited(cache: Path, tmp_path: Path) -> None:
    model, tok = load_base_model(_cfg(cache), seed=0)
    model.generation_config = GenerationConfig(
        do_sample=True, top_k=20, temperature=0.7, repetition_penalty=1.05
    )
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, _ = load_base_model(_cfg(cache, str(tmp_path / "m")))
    gen = loaded.generation_config
    assert gen.do_sample is False and gen.num_beams == 1
    assert gen.temperature != 0.7 and gen.top_k != 20 and gen.repetition_penalty in (None, 1.0)
    assert gen.eos_token_id == tok.eos_token_id


def test_sid_tokens_are_single_tokens_with_mean_rows(cache: Path, tmp_path: Path) -> None:
    model, tok = load_base_model(_cfg(cache), seed=0)
    table = SidTable([[0, 1, 2], [3, 1, 0]], [4, 4, 4])
    old = len(tok)
    mean = model.get_input_embeddings().weight[:old].mean(0).clone()
    assert add_sid_tokens(model, tok, table) == 12 == len(sid_vocabulary(table))
    ids = tok("<a_3><b_1><c_0>", add_special_tokens=False)["input_ids"]
    assert ids == [old + 3, old + 5, old + 8]
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == len(tok) and torch.allclose(emb[old + 5], mean)
    assert model.get_output_embeddings().weight.shape[0] == len(tok)
    tok.save_pretrained(tmp_path / "t")
    from transformers import AutoTokenizer

    back = AutoTokenizer.from_pretrained(tmp_path / "t")
    assert back("<a_3><b_1><c_0>", add_special_tokens=False)["input_ids"] == ids
    assert add_sid_tokens(model, tok, table) == 0  # idempotent


def test_title_mean_initialisation(cache: Path) -> None:
    model, tok = load_base_model(_cfg(cache), seed=0)
    table = SidTable([[0, 0], [0, 1]], [2, 2])
    titles = ["red pen", "blue pen"]
    emb = model.get_input_embeddings().weight
    vecs = [
        emb[torch.tensor(tok(t, add_special_tokens=False)["input_ids"])].mean(0).clone()
        for t in titles
    ]
    add_sid_tokens(model, tok, table, init="title-mean", titles=titles)
    emb = model.get_input_embeddings().weight
    row = lambda t: emb[tok.convert_tokens_to_ids(t)]  # noqa: E731
    assert torch.allclose(row("<a_0>"), (vecs[0] + vecs[1]) / 2, atol=1e-6)
    assert torch.allclose(row("<b_1>"), vecs[1], atol=1e-6)
    with pytest.raises(SidrecError, match="needs item titles"):
        add_sid_tokens(model, tok, SidTable([[1, 1]], [2, 2]), init="title-mean")


def test_bad_base_models_are_named(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="base model path does not exist"):
        load_base_model(_cfg(cache, str(tmp_path / "nope")))
    ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1).save_pretrained(
        tmp_path / "vit"
    )
    with pytest.raises(SidrecError, match="vit model .* not a causal LM"):
        load_base_model(_cfg(cache, str(tmp_path / "vit")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SidrecError, match="could not be loaded"):
        load_base_model(_cfg(cache, str(tmp_path / "empty")))


@pytest.mark.slow
def test_smollm2_loads_offline_and_answers(cache: Path) -> None:
    model, tok = load_base_model(_cfg(cache, "smollm2-135m"))
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=8)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])
