"""How a decoding step turns the model's last position into log-probabilities of the step's
columns: the model's own head over the whole vocabulary (``full``), or only the rows of the
SID tokens and end-of-sequence (``restricted``); and teacher-forced log-probabilities that
agree with ``restricted`` rollouts (RL)."""

from __future__ import annotations

import weakref
from typing import Any

import torch
from transformers import PreTrainedModel

from sidrec.core.decoding.index import PrefixIndex
from sidrec.core.errors import SidrecError

# how a step's log-probabilities are formed (StepHead)
HEADS = ("full", "restricted")
# config keys of models whose logits are not just hidden state x output head
SCALED_LOGITS = ("final_logit_softcapping", "logit_scale")
# output heads already found linear (StepHead is built on every search)
_LINEAR_HEADS: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


def restricted_log_probs(
    index: PrefixIndex, logits: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced log-probabilities as ``restricted`` decoding scores them (training that
    must agree with its rollouts): completion ``tokens`` (B, C) under ``logits`` (B, C, V) at
    their positions, each position normalised over ``index.sid_vocab``.

    Returns log-probabilities (B, C) (0 for a token outside ``sid_vocab``: padding after
    end-of-sequence; and 0 for an end-of-sequence that is the only way on, as beam search scores
    it) and the entropies (B, C) of the per-position distributions (0 at those forced ends)."""
    logp = logits.index_select(2, index.sid_vocab).float().log_softmax(-1)  # (B, C, U)
    local = index.to_local[tokens]
    picked = logp.gather(2, local.clamp(min=0)[:, :, None]).squeeze(2)
    entropy = -(logp.exp() * logp).sum(-1)
    # a forced end-of-sequence: the trie node before it allows nothing else
    node = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
    forced = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
    for j in range(tokens.shape[1]):
        forced[:, j] = index.eos_only[node]
        node = index.child(node, tokens[:, j])
    free = (local >= 0) & ~forced
    return torch.where(free, picked, 0.0), torch.where(forced, 0.0, entropy)


@torch.no_grad()
def _is_linear(head: object, weight: object, bias: object) -> bool:
    """Whether the output ``head`` computes ``x @ weight.T + bias`` (checked on a probe, once
    per head module: the probe forms a full row of logits, which a search must not pay for)."""
    if not isinstance(head, torch.nn.Module) or not isinstance(weight, torch.Tensor):
        return False
    if weight.dim() != 2 or not (bias is None or isinstance(bias, torch.Tensor)):
        return False
    if head in _LINEAR_HEADS:
        return True
    gen = torch.Generator(device=weight.device).manual_seed(0)  # leaves the global RNG alone
    probe = torch.randn(2, weight.shape[1], generator=gen, device=weight.device).to(weight.dtype)
    want = torch.nn.functional.linear(probe, weight, bias)
    got = head(probe)
    linear = got.shape == want.shape and torch.allclose(got, want, rtol=1e-3, atol=1e-3)
    if linear:
        _LINEAR_HEADS.add(head)
    return linear


class StepHead:
    """How a decoding step turns the model's last position into log-probabilities of the
    step's columns (:meth:`PrefixIndex.columns`).

    ``full``: the model's own logits over the whole vocabulary, normalised over it (what
    ``generate`` scores). ``restricted``: the decoder's last hidden state times the rows of the
    output embedding of the SID tokens and end-of-sequence only (``index.sid_vocab``: 769 rows
    for 3 x 256 codes, against Qwen2.5's 152k), normalised over them: the output head never
    forms the (beams, vocabulary) logits. The two rank alike when the model puts almost all of
    a SID position's mass on SID tokens, which SFT on SIDs teaches; they are identical when
    every other token's logit is -inf. ``restricted`` needs a plain linear output head (no
    logit soft-capping or scaling).
    """

    def __init__(self, model: PreTrainedModel, index: PrefixIndex, kind: str = "full") -> None:
        if kind not in HEADS:
            raise SidrecError(f"decoding.head must be one of {HEADS}, got {kind!r}")
        self.model, self.index, self.kind = model, index, kind
        if kind == "restricted":
            head, cfg = model.get_output_embeddings(), model.config
            decoder = model.get_decoder()
            scaled = [k for k in SCALED_LOGITS if getattr(cfg, k, None)]
            # the head's weight and bias: a linear layer's, or (a PEFT wrapper that trains a
            # copy of the head) the active copy's
            weight, bias = getattr(head, "weight", None), getattr(head, "bias", None)
            if decoder is model or scaled or not _is_linear(head, weight, bias):
                raise SidrecError(
                    "decoding.head=restricted needs logits = the decoder's last hidden state "
                    f"times a linear output head, which {type(model).__name__} does not have"
                    f"{' (it scales its logits: ' + ', '.join(scaled) + ')' if scaled else ''}: "
                    "use decoding.head=full"
                )
            self.decoder = decoder
            self.weight = weight.index_select(0, index.sid_vocab)  # (U, H)
            self.bias = None if bias is None else bias.index_select(0, index.sid_vocab)

    def forward(self, **inputs: Any) -> tuple[object, torch.Tensor]:
        """Run the model on ``inputs`` (with ``use_cache``); returns the cache and the last
        position's states: logits (B, V) for ``full``, log-probabilities over ``sid_vocab``
        (B, U) for ``restricted``."""
        if self.kind == "full":
            out = self.model(**inputs, use_cache=True, logits_to_keep=1)
            return out.cache, out.logits[:, -1]
        out = self.decoder(**inputs, use_cache=True)
        hidden = out.last_hidden_state[:, -1]
        logits = torch.nn.functional.linear(hidden, self.weight, self.bias).float()
        return out.cache, logits.log_softmax(-1)

    def step(
        self, tokens: torch.Tensor, mask: torch.Tensor, position: torch.Tensor, cache: object
    ) -> torch.Tensor:
        """States (B, D) after feeding one token per row, ``tokens`` (B,), at ``position`` (B,)
        with attention ``mask`` (B, t) over the rows of ``cache``."""
        return self.forward(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=position[:, None],
            cache=cache,
        )[1]

    def log_probs(self, states: torch.Tensor | None, step: int, n: int) -> torch.Tensor:
        """Log-probabilities (n, W) of ``step``'s columns from ``states`` (n, D); zeros where
        the model was not asked (None)."""
        cols = self.index.columns(step)
        if states is None:
            return torch.zeros(n, cols.shape[0], device=cols.device)
        if self.kind == "full":
            logits = states.float()
            return logits.index_select(1, cols) - logits.logsumexp(1, keepdim=True)
        return states.index_select(1, self.index.local_columns(step))
