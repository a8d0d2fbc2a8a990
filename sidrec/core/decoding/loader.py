"""One way to get a model ready for constrained decoding: the model and its tokenizer, the
prefix index of a catalog's SIDs on the model's device, and a step head the model can use
(checked before any work starts). ``evaluate``, ``recommend`` and ``serve`` load one from a
model directory; SFT and RL validation and RL rollouts build one around the model they train."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import PreTrainedModel

from sidrec.core.decoding.heads import StepHead
from sidrec.core.decoding.index import PrefixIndex
from sidrec.core.model_dir import load_sid_model
from sidrec.core.sids import SidTable


class Decoder(NamedTuple):
    """A model with everything constrained decoding needs."""

    model: PreTrainedModel
    tok: Any
    index: PrefixIndex  # on the model's device
    head: str  # ``full`` or ``restricted`` (see StepHead)


def build_decoder(
    model: PreTrainedModel,
    tok: Any,
    table: SidTable,
    head: str,
    dense_depth: int = 2,
) -> Decoder:
    """A decoder around a loaded ``model`` (and ``tok``, which has the SID tokens) over
    ``table``'s SIDs; a ``head`` the model cannot use fails here."""
    device = next(model.parameters()).device
    index = PrefixIndex.for_tokenizer(table, tok, model.config.vocab_size, device, dense_depth)
    StepHead(model, index, head)
    return Decoder(model, tok, index, head)


def load_decoder(
    model_dir: str | Path,
    table: SidTable,
    device: str | torch.device,
    head: str,
    dense_depth: int = 2,
    bf16: bool = False,
) -> Decoder:
    """The model in ``model_dir`` on ``device`` (bf16 where asked), ready to decode
    ``table``'s SIDs (its own, :func:`~sidrec.core.model_dir.model_sids`, or a catalog that
    extends them)."""
    model, tok = load_sid_model(model_dir, device, bf16)
    return build_decoder(model, tok, table, head, dense_depth)
