"""How a user's history becomes model input: shared by SFT (training examples), RL and
evaluation, so a model is always queried exactly the way it was trained.

Two formats:

- ``prompt``: an instruction built from a template (``{history}`` = the history's SIDs joined by
  the separator), wrapped in the tokenizer's chat template when the model has one; the answer is
  the next item's SID followed by end-of-sequence.
- ``sequence``: the bare SID sequence, ``sid_1 + sep + sid_2 + sep + ...``; the model continues
  it with the next SID. Trained on whole user sequences in one causal pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sidrec.errors import SidrecError
from sidrec.io import read_json, write_json

PROMPTING_FILE = "prompting.json"
FORMATS = ("prompt", "sequence")


@dataclass(frozen=True)
class PromptSpec:
    """Everything needed to turn a history into the main task's model input."""

    format: str
    template: str
    separator: str
    chat_template: bool

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise SidrecError(f"sft.format must be one of {FORMATS}, got {self.format!r}")

    def history_text(self, sids: Sequence[str]) -> str:
        """The main task's prompt text (before any chat template) for a history of SIDs."""
        joined = self.separator.join(sids)
        if self.format == "sequence":
            return joined + self.separator
        return self.template.format(history=joined)

    def save(self, out: Path) -> None:
        write_json(out / PROMPTING_FILE, asdict(self))

    @classmethod
    def load(cls, model_dir: str | Path) -> PromptSpec:
        return cls(**read_json(Path(model_dir) / PROMPTING_FILE))


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
