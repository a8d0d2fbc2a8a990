"""Constrained decoding over a catalog's SIDs, shared by ``evaluate``, ``rl``, ``sft``'s
validation, ``recommend`` and ``serve``:

- :mod:`~sidrec.core.decoding.trie`: the trie of the SIDs as arrays (pure numpy);
- :mod:`~sidrec.core.decoding.index`: :class:`PrefixIndex`, the trie on the model's device and
  each step's allowed tokens for a batch of beams, in one gather;
- :mod:`~sidrec.core.decoding.heads`: :class:`StepHead`, a step's log-probabilities from the
  full vocabulary or the SID rows only;
- :mod:`~sidrec.core.decoding.search`: :func:`beam_search` and :func:`constrained_sample`;
- :mod:`~sidrec.core.decoding.loader`: :func:`load_decoder` / :func:`build_decoder`, the one
  way to put these together.
"""

from sidrec.core.decoding.heads import HEADS, StepHead, restricted_log_probs
from sidrec.core.decoding.index import PrefixIndex
from sidrec.core.decoding.loader import Decoder, build_decoder, load_decoder
from sidrec.core.decoding.search import (
    SidConstraint,
    auto_batch_size,
    beam_config,
    beam_search,
    check_batch_size,
    constrained_sample,
    left_pad,
)
from sidrec.core.decoding.trie import Catalog

__all__ = [
    "HEADS",
    "Catalog",
    "Decoder",
    "PrefixIndex",
    "SidConstraint",
    "StepHead",
    "auto_batch_size",
    "beam_config",
    "beam_search",
    "build_decoder",
    "check_batch_size",
    "constrained_sample",
    "left_pad",
    "load_decoder",
    "restricted_log_probs",
]
