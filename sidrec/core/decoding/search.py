"""Constrained beam search and sampling over a catalog's SIDs (each prompt through the model
once, one vectorised mask per step), the equivalent ``generate`` set-up, and the batch size
``auto`` finds."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, PreTrainedModel

from sidrec.core.decoding.heads import StepHead
from sidrec.core.decoding.index import PrefixIndex
from sidrec.core.errors import SidrecError

# the largest batch batch_size=auto tries
AUTO_BATCH_CAP = 1024


class SidConstraint(LogitsProcessor):
    """A ``generate`` logits processor that lets only catalog SIDs be generated.

    ``prompt_length`` is the (left-padded) prompt width: tokens after it are the generated ones.
    """

    def __init__(self, index: PrefixIndex, prompt_length: int) -> None:
        self.index = index
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.index.constrain(scores, input_ids[:, self.prompt_length :])


def beam_config(num_beams: int, max_new_tokens: int, eos: int, pad: int) -> GenerationConfig:
    """Plain beam search returning every beam, scored by the sum of token log-probabilities
    (length penalty 0), nothing inherited from the model's defaults; greedy for one beam."""
    beams = {"length_penalty": 0.0, "early_stopping": False} if num_beams > 1 else {}
    return GenerationConfig(
        do_sample=False,
        num_beams=num_beams,
        num_return_sequences=num_beams,
        **beams,
        max_new_tokens=max_new_tokens,
        top_k=None,
        top_p=None,
        temperature=None,
        repetition_penalty=None,
        eos_token_id=eos,
        pad_token_id=pad,
        output_scores=True,
        return_dict_in_generate=True,
    )


def left_pad(prompts: Sequence[Sequence[int]], pad: int, device: torch.device) -> dict:
    """``input_ids`` and ``attention_mask`` (B, P) for token lists, padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        if p:
            ids[row, width - len(p) :] = torch.as_tensor(p)
            mask[row, width - len(p) :] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _prefill(
    scorer: StepHead, prompts: Sequence[Sequence[int]], pad_token_id: int
) -> tuple[object, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run each prompt (B token-id lists) through the model once, left-padded. Returns the
    cache, the last position's states (B, D), the attention mask (B, P) and each row's last
    position (B,)."""
    batch = left_pad(prompts, pad_token_id, scorer.model.device)
    mask = batch["attention_mask"]
    position = (mask.cumsum(1) - 1).clamp(min=0)
    cache, states = scorer.forward(**batch, position_ids=position)
    return cache, states, mask, position[:, -1]


@torch.inference_mode()
def beam_search(
    model: PreTrainedModel,
    index: PrefixIndex,
    prompts: Sequence[Sequence[int]],
    num_beams: int,
    pad_token_id: int,
    head: str = "full",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``num_beams`` catalog SIDs for each prompt under constrained beam search.

    The search ``generate`` does with :class:`SidConstraint` and :func:`beam_config` (length
    penalty 0), written out so that each prompt is run through the model once, not once per
    beam, and the search stops as soon as no running beam can beat the finished ones. At each
    step every beam's allowed continuations are scored; the K best that end a SID join the
    finished list (best K kept), the K best others run on.

    Args:
        model: a causal LM that knows the SID tokens.
        index: the catalog's prefix index, on the model's device.
        prompts: B token-id lists (not padded).
        num_beams: K, at most the number of distinct SIDs.
        pad_token_id: the padding token.
        head: ``full`` or ``restricted`` (see :class:`StepHead`).

    Returns:
        ``sids`` (B, K) SID indices, best first, and their ``scores`` (B, K): the SID's
        log-probability under the model (renormalised per step for ``restricted``).
    """
    n_sids = len(index.catalog.codes)
    if num_beams > n_sids:
        raise SidrecError(f"num_beams={num_beams} exceeds the catalog's {n_sids} distinct SIDs")
    scorer = StepHead(model, index, head)
    cache, states, mask, position = _prefill(scorer, prompts, pad_token_id)
    n = mask.shape[0]
    dev = mask.device
    node = torch.zeros(n, dtype=torch.long, device=dev)  # (N * k,) one beam per prompt at first
    running = torch.zeros(n, 1, device=dev)  # (N, k) running beams' scores
    done = torch.full((n, num_beams), float("-inf"), device=dev)  # finished beams' scores
    done_sid = torch.full((n, num_beams), -1, dtype=torch.long, device=dev)
    rows = torch.arange(n, device=dev)[:, None]
    for step in range(index.depth + 1):
        k = running.shape[1]
        cols = index.columns(step)
        width = cols.shape[0]
        logp = scorer.log_probs(states, step, node.shape[0])
        total = running.reshape(-1, 1) + index.restrict(logp, node, step)
        total = total.view(n, k, width)
        # the end-of-sequence column ends a SID: merge with the finished ones
        merged = torch.cat([done, total[:, :, -1]], 1)
        sid = torch.cat([done_sid, index.sid_of_node[node].view(n, k)], 1)
        done, best = merged.topk(num_beams, dim=1)
        done_sid = sid.gather(1, best)
        if width == 1:
            break
        codes = total[:, :, :-1].reshape(n, k * (width - 1))
        running, pick = codes.topk(min(num_beams, codes.shape[1]), dim=1)
        # scores only fall: stop when no running beam can enter the finished list
        if not bool((running[:, 0] > done[:, -1]).any()):
            break
        beam = (rows * k + pick // (width - 1)).view(-1)
        tokens = cols[pick % (width - 1)].view(-1)
        node = index.child(node[beam], tokens)
        cache.reorder_cache(beam)
        mask = torch.cat([mask[beam], mask.new_ones(beam.shape[0], 1)], 1)
        position = position[beam] + 1
        if bool(index.eos_only[node].all()):
            # every beam holds a complete SID: the next step only ends them, at no cost
            states = None
            continue
        states = scorer.step(tokens, mask, position, cache)
    if bool((done_sid < 0).any()) or not bool(torch.isfinite(done).all()):
        raise SidrecError("constrained beam search produced a sequence that is not a catalog SID")
    return done_sid, done


@torch.inference_mode()
def constrained_sample(
    model: PreTrainedModel,
    index: PrefixIndex,
    prompts: Sequence[Sequence[int]],
    num_samples: int,
    pad_token_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    head: str = "full",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_samples`` catalog SIDs per prompt, drawn token by token from the model's
    distribution at ``temperature`` renormalised over the allowed tokens (the prefix index's
    masks, as in :func:`beam_search`); the same SID can be drawn more than once.

    Each prompt runs through the model once; its cache is then repeated for the samples.
    ``head``: ``full`` or ``restricted`` (see :class:`StepHead`).

    Returns:
        ``sids`` (B, G) SID indices and ``scores`` (B, G): each sample's log-probability under
        the model (temperature 1), each row sorted best first.
    """
    if temperature <= 0:
        raise SidrecError(f"sampling temperature must be > 0, got {temperature}")
    g = num_samples
    scorer = StepHead(model, index, head)
    cache, states, mask, position = _prefill(scorer, prompts, pad_token_id)
    n = mask.shape[0]
    rep = torch.arange(n, device=mask.device).repeat_interleave(g)
    cache.reorder_cache(rep)
    states = states.index_select(0, rep)  # (N * G, D)
    mask, position = mask[rep], position[rep]
    node = torch.zeros(n * g, dtype=torch.long, device=mask.device)
    score = torch.zeros(n * g, device=mask.device)
    sid = torch.full_like(node, -1)
    for step in range(index.depth + 1):
        cols = index.columns(step)
        logp = index.restrict(scorer.log_probs(states, step, node.shape[0]), node, step)
        noise = torch.rand(logp.shape, device=logp.device, generator=generator)
        # Gumbel-max over the allowed columns draws from softmax(logp / temperature)
        gumbel = -torch.log(-torch.log(noise.clamp_(1e-20, 1.0 - 1e-7)))
        pick = (logp / temperature + gumbel).argmax(1)
        score += torch.where(sid < 0, logp.gather(1, pick[:, None]).squeeze(1), 0.0)
        tokens = cols[pick]
        ending = (sid < 0) & (tokens == index.eos_token_id)
        sid = torch.where(ending, index.sid_of_node[node], sid)
        node = index.child(node, tokens)
        if bool((sid >= 0).all()):
            break
        mask = torch.cat([mask, mask.new_ones(n * g, 1)], 1)
        position = position + 1
        if bool(index.eos_only[node].all()):
            states = None  # every sample holds a complete SID: the next step only ends it
            continue
        states = scorer.step(tokens, mask, position, cache)
    if bool((sid < 0).any()):
        raise SidrecError("constrained sampling produced a sequence that is not a catalog SID")
    score, order = score.view(n, g).sort(1, descending=True)
    return sid.view(n, g).gather(1, order), score


def auto_batch_size(
    model: PreTrainedModel,
    index: PrefixIndex,
    prompts: Sequence[Sequence[int]],
    num_beams: int,
    pad_token_id: int,
    head: str = "full",
    seconds: float = 10.0,
) -> int:
    """``batch_size: auto``: the largest batch, doubling from 1 up to :data:`AUTO_BATCH_CAP`
    (and the number of prompts), in which the longest ``prompts`` decode with ``num_beams``
    beams: on a GPU, without running out of its memory; on a CPU, within ``seconds`` a batch
    (larger batches only pay while a batch stays short). 1 when even that does not fit."""
    longest = sorted(prompts, key=len, reverse=True)
    limit = min(len(longest), AUTO_BATCH_CAP)
    best, size = 1, 1
    while True:
        started = time.perf_counter()
        try:
            beam_search(model, index, longest[:size], num_beams, pad_token_id, head)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            return best
        if model.device.type == "cpu" and time.perf_counter() - started > seconds:
            return best
        best = size
        if size >= limit:
            return best
        size = min(size * 2, limit)


def check_batch_size(setting: object, key: str = "evaluate.batch_size") -> None:
    """Refuse a batch-size setting that is neither a number >= 1 nor ``auto``."""
    if setting == "auto":
        return
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise SidrecError(f"{key} must be a number >= 1 or auto, got {setting!r}")
