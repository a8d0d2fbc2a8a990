"""A trained model directory: what ``sft`` (and ``rl``) write and ``evaluate``, ``rl``,
``recommend`` and ``serve`` read.

Besides the weights, the extended tokenizer and ``generation_config.json`` it holds
``prompting.json`` (how the model was trained to be queried), ``sids/`` (a copy of the SID
directory it was trained on; its content hash is in the manifest) and ``items.parquet`` (the
catalog, so recommendations can be shown with titles and source ids). Consumers use the
bundled SIDs by default and refuse a different SID directory, naming both.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from sidrec.core.errors import InputError, SidrecError, require_file
from sidrec.core.sids import SidTable, read_sid_dir

SIDS_DIR = "sids"
ITEMS_FILE = "items.parquet"


def sid_hash(table: SidTable) -> str:
    """A content hash of a SID assignment (the codes of every item, in item order)."""
    return hashlib.sha256(json.dumps(table.codes, separators=(",", ":")).encode()).hexdigest()


def bundle(out: Path, sid_dir: Path, items: pl.DataFrame) -> str:
    """Copy the SID directory and the items table into the model directory ``out``; return
    the SIDs' content hash."""
    shutil.copytree(sid_dir, out / SIDS_DIR)
    items.write_parquet(out / ITEMS_FILE)
    return sid_hash(read_sid_dir(out / SIDS_DIR))


def extends(grown: SidTable, table: SidTable) -> bool:
    """Whether ``grown`` holds every SID of ``table`` unchanged, for the same items, and
    possibly more items after them (a catalog grown by ``sid assign``)."""
    n = len(table.codes)
    return len(grown.codes) >= n and grown.codes[:n] == table.codes


def model_sids(model_dir: str | Path, sid: str | Path | None = None) -> tuple[SidTable, Path]:
    """The SIDs a model was trained on and where they are. ``sid``, when given, must hold the
    same SIDs (by content), or those SIDs unchanged followed by new items' (a catalog grown by
    ``sid assign`` or ``sidrec update``: then ``sid``'s table is returned); otherwise this
    raises, naming both."""
    bundled = Path(model_dir) / SIDS_DIR
    if not bundled.is_dir():
        raise InputError(
            model_dir,
            f"has no bundled {SIDS_DIR}/ (trained by an older sidrec?); train it again",
        )
    table = read_sid_dir(bundled)
    if sid is not None and Path(sid).resolve() != bundled.resolve():
        other = read_sid_dir(sid)
        if extends(other, table):
            return other, Path(sid)
        raise SidrecError(
            f"--sid {sid} (SID hash {sid_hash(other)[:12]}) is neither the SID index the model "
            f"was trained on ({bundled}, hash {sid_hash(table)[:12]}) nor one grown from it; "
            "leave --sid out to use the model's own"
        )
    return table, bundled


def model_items(model_dir: str | Path) -> pl.DataFrame:
    """The items table bundled with a model."""
    return pl.read_parquet(require_file(Path(model_dir) / ITEMS_FILE, "the model's items table"))


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a sidrec model, exactly as saved.

    A tokenizer sidrec built itself (Qwen2's from ``qwen.tiktoken``, or a SID-only vocabulary)
    is saved as a plain ``tokenizer.json``; ``AutoTokenizer`` would rebuild it as the model
    type's tokenizer class (Qwen2's) and lose its pre-tokenizer, so it is loaded directly.
    """
    config = Path(path) / "tokenizer_config.json"
    saved = json.loads(config.read_text()).get("tokenizer_class") if config.exists() else None
    if saved in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        return PreTrainedTokenizerFast.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def load_sid_model(model_dir: str | Path, device: torch.device, bf16: bool) -> tuple[Any, Any]:
    """A trained SID model (``sidrec sft`` or ``rl`` output) and its tokenizer, for inference."""
    model_dir = require_file(model_dir, "model directory")
    require_file(Path(model_dir) / "config.json", "model config (is this an sft output?)")
    tok = load_tokenizer(model_dir)
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    return model, tok
