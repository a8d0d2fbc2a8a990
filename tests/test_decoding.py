"""The prefix index and constrained beam search: only catalog SIDs, K distinct, exact masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from sidrec.core.decoding import (
    Catalog,
    PrefixIndex,
    SidConstraint,
    StepHead,
    auto_batch_size,
    beam_config,
    beam_search,
    check_batch_size,
    constrained_sample,
    left_pad,
    restricted_log_probs,
)
from sidrec.core.errors import SidrecError
from sidrec.core.sids import SidTable, code_token, sid_tokens
from sidrec.sft.models import sid_tokenizer


def random_table(rng: np.random.Generator, n: int, sizes: list[int], extra: float) -> SidTable:
    """``n`` distinct SIDs over ``sizes``; a share ``extra`` have the last level, the others
    stop one level short (uneven lengths: some SIDs are prefixes of others)."""
    depth = len(sizes) - 1
    seen: set[tuple[int, ...]] = set()
    codes: list[list[int]] = []
    while len(codes) < n:
        c = tuple(int(rng.integers(k)) for k in sizes[:depth])
        if rng.random() < extra:
            c = (*c, int(rng.integers(sizes[depth])))
        if c not in seen:
            seen.add(c)
            codes.append(list(c))
    return SidTable(codes, sizes)


def tiny_model(tok: object, seed: int) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return Qwen2ForCausalLM(cfg).eval()


def brute_allowed(codes: list[list[int]], prefix: list[int]) -> set[object]:
    """Allowed next codes (or "eos") after ``prefix`` by scanning every SID."""
    if "eos" in prefix:
        return {"eos"}
    n = len(prefix)
    nxt: set[object] = {tuple(c[: n + 1]) for c in codes if c[:n] == prefix and len(c) > n}
    out: set[object] = {t[-1] for t in nxt}
    if prefix in codes or not any(c[:n] == prefix for c in codes):
        out.add("eos")
    return out


def token_id(tok: object, level: int, code: object) -> int:
    return tok.eos_token_id if code == "eos" else tok.convert_tokens_to_ids(code_token(level, code))


CASES = [
    ("one item", 1, [4, 4, 4], 1.0),
    ("few, shared prefixes", 6, [2, 2, 3], 1.0),
    ("uneven lengths", 40, [3, 3, 4], 0.5),
    ("many items", 500, [8, 8, 8, 4], 0.3),
    ("wide middle level", 300, [2, 60, 3], 0.7),
]


@pytest.mark.parametrize("name,n,sizes,extra", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dense_depth,dense_width", [(0, 64), (1, 64), (2, 64), (0, 2)])
def test_mask_equals_brute_force(
    name: str,
    n: int,
    sizes: list[int],
    extra: float,
    dense_depth: int,
    dense_width: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dense tables for the first levels, windows for the rest, and (dense_width 2) dense
    tables for every deeper level with a node of more than 2 children: the same masks."""
    from sidrec.core.decoding import trie

    monkeypatch.setattr(trie, "DENSE_WIDTH", dense_width)
    rng = np.random.default_rng(n)
    table = random_table(rng, n, sizes, extra)
    tok = sid_tokenizer(table)
    index = PrefixIndex.for_tokenizer(table, tok, len(tok), dense_depth=dense_depth)
    wide = [t for t, w in enumerate(index.tail_widths[:-1]) if w > dense_width]
    assert sorted(index.dense) == sorted({*range(min(dense_depth, index.depth)), *wide})
    # every prefix of every SID, each complete SID plus eos, and random (mostly off-trie) ones
    trie_prefixes = {tuple(c[:d]) for c in table.codes for d in range(len(c) + 1)}
    prefixes = set(trie_prefixes)
    prefixes |= {(*c, "eos") for c in table.codes[:20]}
    for _ in range(50):
        d = int(rng.integers(1, len(sizes) + 1))
        prefixes.add(tuple(int(rng.integers(k)) for k in sizes[:d]))
    by_len = itertools.groupby(sorted(prefixes, key=lambda p: (len(p), str(p))), key=len)
    for length, group in by_len:
        group = list(group)
        ids = [[token_id(tok, lv, c) for lv, c in enumerate(p)] for p in group]
        mask = index.allowed_tokens(torch.tensor(ids, dtype=torch.long).view(len(group), length))
        assert mask.any(1).all(), "an allowed set is empty"
        for p, row in zip(group, mask, strict=True):
            want = {token_id(tok, len(p), a) for a in brute_allowed(table.codes, list(p))}
            assert set(row.nonzero().flatten().tolist()) == want, p
    # each level's window is as wide as that level's widest trie node, no wider
    for t in range(index.depth + 1):
        level = [p for p in prefixes if len(p) == t and "eos" not in p and p in trie_prefixes]
        want = max(len(brute_allowed(table.codes, list(p))) for p in level)
        assert index.tail_widths[t] == want, t


@pytest.mark.parametrize("name,n,sizes,extra", CASES, ids=[c[0] for c in CASES])
def test_beam_search_returns_k_distinct_catalog_sids(
    name: str, n: int, sizes: list[int], extra: float
) -> None:
    rng = np.random.default_rng(7 + n)
    table = random_table(rng, n, sizes, extra)
    tok = sid_tokenizer(table)
    model = tiny_model(tok, seed=n)
    index = PrefixIndex.for_tokenizer(table, tok, model.config.vocab_size)
    k = min(n, 20)
    # prompts of different lengths (left padding), histories of random catalog SIDs
    prompts = [
        tok("".join(table.sids[int(i)] for i in rng.integers(n, size=h)))["input_ids"]
        for h in (1, 3, 6, 2)
    ]
    sids, scores = beam_search(model, index, prompts, k, tok.pad_token_id)
    assert sids.shape == scores.shape == (len(prompts), k)
    assert torch.isfinite(scores).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    for row in sids.tolist():
        assert len(set(row)) == k
        assert all(0 <= s < len(index.catalog.codes) for s in row)


@pytest.mark.parametrize("name,n,sizes,extra", CASES, ids=[c[0] for c in CASES])
def test_generate_with_the_processor_agrees_with_beam_search(
    name: str, n: int, sizes: list[int], extra: float
) -> None:
    """``generate`` under :class:`SidConstraint` yields K distinct catalog SIDs; where every
    SID has the same length it finds exactly what ``beam_search`` finds, and otherwise
    ``beam_search`` (which keeps every finished SID that makes the top K) does at least as
    well."""
    rng = np.random.default_rng(11 + n)
    table = random_table(rng, n, sizes, extra)
    tok = sid_tokenizer(table)
    model = tiny_model(tok, seed=n + 1)
    index = PrefixIndex.for_tokenizer(table, tok, model.config.vocab_size)
    k = min(n, 8)
    prompts = [
        tok("".join(table.sids[int(i)] for i in rng.integers(n, size=h)))["input_ids"]
        for h in (2, 5, 1)
    ]
    batch = left_pad(prompts, tok.pad_token_id, model.device)
    width = batch["input_ids"].shape[1]
    out = model.generate(
        **batch,
        generation_config=beam_config(k, index.depth + 1, tok.eos_token_id, tok.pad_token_id),
        logits_processor=[SidConstraint(index, width)],
    )
    hf_sids = index.sids_of(out.sequences[:, width:]).view(len(prompts), k)
    assert (hf_sids >= 0).all()
    assert all(len(set(row)) == k for row in hf_sids.tolist())
    sids, scores = beam_search(model, index, prompts, k, tok.pad_token_id)
    if k == 1:
        return  # greedy generate: no sequence scores to compare
    hf_scores = out.sequences_scores.view(len(prompts), k).sort(1, descending=True).values
    if len({len(c) for c in table.codes}) == 1:
        order = out.sequences_scores.view(len(prompts), k).argsort(1, descending=True)
        assert sids.tolist() == hf_sids.gather(1, order).tolist()
        torch.testing.assert_close(scores, hf_scores, atol=1e-4, rtol=0)
    else:
        assert (scores >= hf_scores - 1e-4).all()


def test_beam_scores_are_sid_log_probabilities() -> None:
    """With as many beams as SIDs every SID comes back, scored by its teacher-forced
    log-probability (the forced end-of-sequence adds nothing)."""
    rng = np.random.default_rng(3)
    table = random_table(rng, 12, [3, 3, 3], 1.0)
    tok = sid_tokenizer(table)
    model = tiny_model(tok, seed=1)
    index = PrefixIndex.for_tokenizer(table, tok, model.config.vocab_size)
    prompt = tok(table.sids[0] + table.sids[5])["input_ids"]
    sids, scores = beam_search(model, index, [prompt], 12, tok.pad_token_id)
    got = dict(zip(sids[0].tolist(), scores[0].tolist(), strict=True))
    assert sorted(got) == list(range(12))
    for s, codes in enumerate(index.catalog.codes):
        target = tok.convert_tokens_to_ids(sid_tokens(codes))
        ids = torch.tensor([prompt + target])
        with torch.no_grad():
            logp = model(ids).logits[0, :-1].log_softmax(-1)
        want = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(target))
        assert got[s] == pytest.approx(want, abs=1e-4)


def test_shared_sids_map_to_every_item_and_one_representative() -> None:
    cat = Catalog.from_table(SidTable([[1, 2], [0, 1], [1, 2], [1, 2]], [2, 3]))
    assert cat.codes == [(1, 2), (0, 1)]
    assert cat.items == [[0, 2, 3], [1]]
    assert cat.item_sid.tolist() == [0, 1, 0, 0]
    assert cat.representative.tolist() == [0, 1]


def test_too_many_beams_and_missing_tokens_are_refused() -> None:
    table = SidTable([[0, 1], [1, 0]], [2, 2])
    tok = sid_tokenizer(table)
    index = PrefixIndex.for_tokenizer(table, tok, len(tok))
    with pytest.raises(SidrecError, match="num_beams=3 exceeds"):
        beam_search(tiny_model(tok, 0), index, [[3]], 3, tok.pad_token_id)
    wider = SidTable([[0, 1], [1, 0], [2, 2]], [3, 3])
    with pytest.raises(SidrecError, match="lacks SID tokens"):
        PrefixIndex.for_tokenizer(wider, tok, len(tok))


def test_constrained_samples_follow_the_renormalised_model() -> None:
    """Every sample is a catalog SID scored by its log-probability (as beam search scores
    it), rows come best first, a seeded generator repeats its draws, and the frequencies
    match the model's distribution renormalised over the allowed tokens at each step."""
    rng = np.random.default_rng(5)
    table = random_table(rng, 12, [3, 3, 3], 1.0)
    tok = sid_tokenizer(table)
    model = tiny_model(tok, seed=2)
    index = PrefixIndex.for_tokenizer(table, tok, model.config.vocab_size)
    prompt = tok(table.sids[1] + table.sids[4])["input_ids"]
    n = 3000

    def draw(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return constrained_sample(model, index, [prompt], n, tok.pad_token_id, 1.0, gen)

    sids, scores = draw(0)
    assert sids.shape == scores.shape == (1, n)
    assert torch.equal(sids, draw(0)[0]) and not torch.equal(sids, draw(1)[0])
    assert (scores[0, :-1] >= scores[0, 1:]).all()
    beams, beam_scores = beam_search(model, index, [prompt], 12, tok.pad_token_id)
    exact = dict(zip(beams[0].tolist(), beam_scores[0].tolist(), strict=True))
    for s, score in zip(sids[0].tolist()[:50], scores[0].tolist()[:50], strict=True):
        assert score == pytest.approx(exact[s], abs=1e-4)
    # the sampling distribution: each step's softmax over the allowed tokens only
    want = np.zeros(12)
    for s, codes in enumerate(index.catalog.codes):
        target = tok.convert_tokens_to_ids(sid_tokens(codes))
        with torch.no_grad():
            logits = model(torch.tensor([prompt + target])).logits[0, len(prompt) - 1 :]
        logp = 0.0
        for j, t in enumerate(target):
            allowed = index.allowed_tokens(torch.tensor([target[:j]]))[0]
            logp += float(logits[j, allowed].log_softmax(-1)[allowed.nonzero()[:, 0] == t][0])
        want[s] = np.exp(logp)
    assert want.sum() == pytest.approx(1.0, abs=1e-4)
    got = np.bincount(sids[0].numpy(), minlength=12) / n
    assert np.abs(got - want).max() < 0.03


def test_sampling_at_a_low_temperature_takes_the_greedy_path() -> None:
    rng = np.random.default_rng(6)
    table = random_table(rng, 10, [4, 4, 4], 1.0)
    tok = sid_tokenizer(table)
    model = tiny_model(tok, seed=3)
    index = PrefixIndex.for_tokenizer(table, tok, model.config.vocab_size)
    prompt = tok(table.sids[2])["input_ids"]
    gen = torch.Generator().manual_seed(0)
    sids, _ = constrained_sample(model, index, [prompt], 8, tok.pad_token_id, 1e-4, gen)
    greedy, _ = beam_search(model, index, [prompt], 1, tok.pad_token_id)
    assert sids[0].tolist() == [greedy[0, 0].item()] * 8
    with pytest.raises(SidrecError, match="temperature must be > 0"):
        constrained_sample(model, index, [prompt], 2, tok.pad_token_id, 0.0)


class SidOnly(Qwen2ForCausalLM):
    """A model whose logits of every token but the SID tokens and end-of-sequence are -inf
    (a bias added after its output head): the restricted head, which only forms those
    columns, must score exactly as the full head on it."""

    sid_bias: torch.Tensor  # (V,)

    def forward(self, *args: object, **kwargs: object) -> object:
        out = super().forward(*args, **kwargs)
        out.logits = out.logits + self.sid_bias
        return out


def test_restricted_head_equals_full_when_non_sid_logits_are_minus_infinity() -> None:
    rng = np.random.default_rng(8)
    table = random_table(rng, 60, [4, 5, 6], 0.5)
    tok = sid_tokenizer(table)
    index = PrefixIndex.for_tokenizer(table, tok, len(tok))
    model = SidOnly(tiny_model(tok, 4).config).eval()
    model.load_state_dict(tiny_model(tok, 4).state_dict())
    model.sid_bias = torch.full((model.config.vocab_size,), float("-inf"))
    model.sid_bias[index.sid_vocab] = 0.0
    prompts = [
        tok("".join(table.sids[int(i)] for i in rng.integers(60, size=h)))["input_ids"]
        for h in (1, 4, 2)
    ]
    full, full_scores = beam_search(model, index, prompts, 10, tok.pad_token_id, "full")
    restricted, scores = beam_search(model, index, prompts, 10, tok.pad_token_id, "restricted")
    assert restricted.tolist() == full.tolist()
    torch.testing.assert_close(scores, full_scores, atol=1e-5, rtol=0)
    # without the bias, the tokens the restricted head leaves out change the scores
    plain = tiny_model(tok, 4)
    assert not torch.allclose(
        beam_search(plain, index, prompts, 10, tok.pad_token_id, "restricted")[1],
        beam_search(plain, index, prompts, 10, tok.pad_token_id, "full")[1],
    )


def test_restricted_scores_renormalise_and_training_log_probs_agree() -> None:
    """On a model that gives other tokens mass too, the restricted head scores every SID at
    least as high as the full head (it normalises over fewer tokens), and its scores are the
    teacher-forced log-probabilities RL trains with under that head."""
    rng = np.random.default_rng(9)
    table = random_table(rng, 30, [3, 4, 5], 0.6)
    tok = sid_tokenizer(table)
    model = tiny_model(tok, seed=5)
    index = PrefixIndex.for_tokenizer(table, tok, model.config.vocab_size)
    prompt = tok(table.sids[3] + table.sids[7])["input_ids"]
    n = len(index.catalog.codes)
    full = dict(
        zip(*(x[0].tolist() for x in beam_search(model, index, [prompt], n, 0)), strict=True)
    )
    sids, scores = beam_search(model, index, [prompt], n, tok.pad_token_id, "restricted")
    got = dict(zip(sids[0].tolist(), scores[0].tolist(), strict=True))
    assert sorted(got) == sorted(full) == list(range(n))
    assert all(got[s] >= full[s] - 1e-5 for s in got) and got != pytest.approx(full)
    completions = [
        tok.convert_tokens_to_ids(sid_tokens(codes)) + [tok.eos_token_id]
        for codes in index.catalog.codes
    ]
    width = max(map(len, completions))
    ids = torch.tensor([prompt + c + [tok.pad_token_id] * (width - len(c)) for c in completions])
    with torch.no_grad():
        logits = model(ids).logits[:, len(prompt) - 1 : -1]
    logp, entropy = restricted_log_probs(index, logits, ids[:, len(prompt) :])
    assert torch.isfinite(logp).all() and (entropy >= -1e-6).all()
    for s in range(n):
        assert float(logp[s].sum()) == pytest.approx(got[s], abs=1e-4)


def test_restricted_head_needs_a_plain_output_head() -> None:
    table = SidTable([[0, 1], [1, 0]], [2, 2])
    tok = sid_tokenizer(table)
    model = tiny_model(tok, 0)
    index = PrefixIndex.for_tokenizer(table, tok, len(tok))
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(SidrecError, match="final_logit_softcapping"):
        StepHead(model, index, "restricted")
    with pytest.raises(SidrecError, match="decoding.head must be one of"):
        StepHead(model, index, "half")


def test_auto_batch_size_doubles_until_memory_or_time_runs_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sidrec.core.decoding import search

    table = SidTable([[0, 1], [1, 0], [1, 1]], [2, 2])
    tok = sid_tokenizer(table)
    model = tiny_model(tok, 0)
    index = PrefixIndex.for_tokenizer(table, tok, len(tok))
    prompts = [[3] * n for n in range(1, 12)]  # 11 prompts
    args = (model, index, prompts, 2, tok.pad_token_id)
    assert auto_batch_size(*args, seconds=60.0) == 11  # 1, 2, 4, 8, then all 11
    assert auto_batch_size(*args, seconds=0.0) == 1  # even one batch is over the budget
    tried: list[int] = []

    def out_of_memory_above_4(model: object, index: object, batch: list, *rest: object) -> None:
        tried.append(len(batch))
        assert batch[0] == prompts[-1]  # the longest prompts are tried
        if len(batch) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(search, "beam_search", out_of_memory_above_4)
    assert auto_batch_size(*args, seconds=60.0) == 4 and tried == [1, 2, 4, 8]
    for bad in (0, -3, "big", 2.5, True):
        with pytest.raises(SidrecError, match="must be a number >= 1 or auto"):
            check_batch_size(bad)
