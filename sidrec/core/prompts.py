"""How a user's history becomes model input: shared by SFT (training examples), RL and
evaluation, so a model is always queried exactly the way it was trained.

Two formats:

- ``prompt``: an instruction built from a template (``{history}`` = the history's SIDs joined by
  the separator), wrapped in the tokenizer's chat template when the model has one; the answer is
  the next item's SID followed by end-of-sequence.
- ``sequence``: the bare SID sequence, ``sid_1 + sep + sid_2 + sep + ...``; the model continues
  it with the next SID. Trained on whole user sequences in one causal pass.

A history longer than the model was trained on loses its oldest items: first down to
``max_history`` items, then (prompt format) until prompt and answer fit ``max_length`` tokens,
the same way in training, validation, evaluation and serving.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from sidrec.core.errors import InputError, SidrecError
from sidrec.core.io import read_json, write_json

PROMPTING_FILE = "prompting.json"
FORMATS = ("prompt", "sequence")
# joins the quoted titles of a title history
TITLE_SEPARATOR = ", "


@dataclass(frozen=True)
class PromptSpec:
    """Everything needed to turn a history into the main task's model input."""

    format: str
    template: str
    separator: str
    chat_template: bool
    # items of history the model was trained on (the dataset's max_history)
    max_history: int
    # tokens per training example: prompt + answer (+ end-of-sequence)
    max_length: int

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise SidrecError(f"sft.format must be one of {FORMATS}, got {self.format!r}")
        if self.max_history < 1 or self.max_length < 2:
            raise SidrecError(
                f"max_history must be >= 1 and max_length >= 2, got {self.max_history} and "
                f"{self.max_length}"
            )

    def history_text(self, sids: Sequence[str]) -> str:
        """The main task's prompt text (before any chat template) for a history of SIDs."""
        joined = self.separator.join(sids)
        if self.format == "sequence":
            return joined + self.separator
        return self.template.format(history=joined)

    def encode(self, tok: Any, sids: Sequence[str], answer_tokens: int) -> tuple[list[int], int]:
        """Token ids of the prompt for a history of SIDs (oldest first), and how many of its
        oldest items were dropped: beyond ``max_history``, then until the prompt plus
        ``answer_tokens`` fit ``max_length``."""
        cut = max(0, len(sids) - self.max_history)
        ids, dropped = fit_history(
            lambda h: encode_prompt(tok, self.history_text(h), self.chat_template),
            sids[cut:],
            self.max_length - answer_tokens,
        )
        if ids is None:
            raise SidrecError(
                f"even an empty history does not fit max_length={self.max_length} tokens with "
                f"an answer of {answer_tokens}"
            )
        return ids, cut + dropped

    def save(self, out: Path) -> None:
        write_json(out / PROMPTING_FILE, asdict(self))

    @classmethod
    def load(cls, model_dir: str | Path) -> PromptSpec:
        """The spec in ``model_dir/prompting.json``; a malformed file is an InputError."""
        path = Path(model_dir) / PROMPTING_FILE
        raw = read_json(path)
        types = {f.name: f.type for f in fields(cls)}
        expected = {"str": str, "bool": bool, "int": int}
        if not isinstance(raw, dict) or set(raw) != set(types):
            got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise InputError(path, f"expected an object with keys {sorted(types)}, got {got}")
        for key, kind in types.items():
            value = raw[key]
            if not isinstance(value, expected[kind]) or (kind == "int" and isinstance(value, bool)):
                raise InputError(path, f"{key} must be a {kind}, got {value!r}")
        try:
            return cls(**raw)
        except SidrecError as e:
            raise InputError(path, str(e)) from None


def fit_history(
    encode: Callable[[Sequence[str]], list[int]], items: Sequence[str], budget: int
) -> tuple[list[int] | None, int]:
    """``encode(items[d:])`` for the smallest ``d`` (oldest items dropped first) whose length
    is at most ``budget`` tokens, and ``d``; ``(None, len(items))`` when nothing fits.

    Example:
        >>> fit_history(lambda h: list("".join(h)), ["ab", "cd", "ef"], 4)
        (['c', 'd', 'e', 'f'], 1)
    """
    ids = encode(items)
    if len(ids) <= budget:
        return ids, 0
    lo, hi = 1, len(items)  # the answer lies in [lo, hi] (hi: nothing left of the history)
    best = encode(items[hi:])
    if len(best) > budget:
        return None, len(items)
    while lo < hi:
        mid = (lo + hi) // 2
        trial = encode(items[mid:])
        if len(trial) <= budget:
            hi, best = mid, trial
        else:
            lo = mid + 1
    return best, hi


def wants_chat_template(tok: Any, setting: bool | None, fmt: str) -> bool:
    """Whether prompts are wrapped in ``tok``'s chat template (``setting`` None = if it has one)."""
    if fmt == "sequence":
        if setting:
            raise SidrecError("sft.chat_template=true does not apply to sft.format=sequence")
        return False
    has = bool(getattr(tok, "chat_template", None))
    if setting and not has:
        raise SidrecError("sft.chat_template=true, but the tokenizer has no chat template")
    return has if setting is None else setting


def render_prompt(tok: Any, text: str, chat: bool) -> str:
    """``text`` as the model sees it: a user turn plus the assistant header, or unchanged."""
    if not chat:
        return text
    return tok.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def encode_prompt(tok: Any, text: str, chat: bool) -> list[int]:
    """Token ids of the rendered prompt (special tokens come from the template only)."""
    return tok(render_prompt(tok, text, chat), add_special_tokens=False)["input_ids"]


def history_separator(task: str, item_separator: str) -> str:
    """What joins the history items of ``task``'s prompts: quoted titles take ``", "``."""
    return TITLE_SEPARATOR if task.startswith("title_history") else item_separator


def fill_template(template: str, history: Sequence[str], separator: str, **fields: str) -> str:
    """A prompt from ``template`` with ``{history}`` = the items joined by ``separator``."""
    return template.format(history=separator.join(history), **fields)


def fit_example_prompt(
    tok: Any,
    prompt: str,
    template: str,
    history: Sequence[str],
    separator: str,
    chat: bool,
    budget: int,
) -> tuple[list[int] | None, str, bool]:
    """Token ids of an example's ``prompt`` (a row of ``sidrec convert``'s examples) within
    ``budget`` tokens: when too long, rebuilt from its ``template`` with the oldest ``history``
    items dropped until it fits. Returns the ids (None when even no history does not fit, or
    there is no history to shorten), the prompt text they encode (before any chat template)
    and whether it was shortened."""
    ids = encode_prompt(tok, prompt, chat)
    if len(ids) <= budget:
        return ids, prompt, False
    if not history:
        return None, prompt, False

    def encode(h: Sequence[str]) -> list[int]:
        return encode_prompt(tok, fill_template(template, h, separator), chat)

    ids, dropped = fit_history(encode, history, budget)
    return ids, fill_template(template, history[dropped:], separator), True
