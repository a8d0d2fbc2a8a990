"""``sidrec rl --algo dpo``: DPO on ``trl.DPOTrainer`` with pairs from constrained beam search.

For each training prompt the starting model runs the constrained beam search with
``rl.dpo.rejected + 1`` beams; chosen = the target's SID, rejected = each of the highest-ranked
beams that is not the target (``rl.dpo.rejected`` pairs per prompt, sharing the prompt, as in
S-DPO's several negatives). The pairs are built once into the run's work directory
(``dpo_pairs/train.parquet`` and ``valid.parquet``, reused when the run resumes) and
published with the model. The reference model is the starting model, loaded from its local
directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl
from accelerate import PartialState
from datasets import Dataset as HFDataset
from transformers import PreTrainedModel, TrainerCallback
from trl import DPOConfig, DPOTrainer

from sidrec.core.decoding import PrefixIndex, beam_search
from sidrec.core.errors import SidrecError
from sidrec.core.prompts import PromptSpec
from sidrec.core.sids import sid_tokens

PAIRS_DIR = "dpo_pairs"
PAIR_SCHEMA = {
    "prompt": pl.String,
    "chosen": pl.String,
    "rejected": pl.String,
    "target": pl.Int64,
    "rejected_sid": pl.Int64,
    "rejected_rank": pl.Int64,
}


def build_pairs(
    model: PreTrainedModel,
    index: PrefixIndex,
    tok: Any,
    prompts: list[str],
    targets: list[int],
    rejected: int,
    batch_size: int,
    head: str = "full",
) -> pl.DataFrame:
    """Preference pairs for ``prompts`` (rendered prompt texts) and their ``targets`` (SID
    indices): per prompt, the target's SID against each of the ``rejected`` best wrong beams."""
    text = ["".join(sid_tokens(codes)) for codes in index.catalog.codes]
    rows: dict[str, list] = {k: [] for k in PAIR_SCHEMA}
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(prompts), batch_size):
            part = prompts[b : b + batch_size]
            ids = [tok(p, add_special_tokens=False)["input_ids"] for p in part]
            top = beam_search(model, index, ids, rejected + 1, tok.pad_token_id, head)[0]
            top = top.cpu().tolist()
            for prompt, target, beams in zip(part, targets[b : b + batch_size], top, strict=True):
                wrong = [(rank, s) for rank, s in enumerate(beams) if s != target][:rejected]
                for rank, s in wrong:
                    rows["prompt"].append(prompt)
                    rows["chosen"].append(text[target])
                    rows["rejected"].append(text[s])
                    rows["target"].append(target)
                    rows["rejected_sid"].append(s)
                    rows["rejected_rank"].append(rank)
    finally:
        model.train(was_training)
    return pl.DataFrame(rows, schema=PAIR_SCHEMA)


def saved_pairs(
    folder: Path,
    name: str,
    state: PartialState,
    build: Any,
) -> HFDataset:
    """The pairs in ``folder/<name>.parquet``, built by ``build()`` on the main process first
    when missing (written under a temporary name, then renamed)."""
    path = folder / f"{name}.parquet"
    with state.main_process_first():
        if not path.is_file():
            if not state.is_main_process:
                raise SidrecError(f"{path} was not written by the main process")
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            build().write_parquet(tmp)
            os.replace(tmp, path)
    return HFDataset.from_polars(pl.read_parquet(path))


def dpo_trainer(
    model: PreTrainedModel,
    tok: Any,
    index: PrefixIndex,
    train: HFDataset,
    valid: HFDataset | None,
    work: Path,
    state: PartialState,
    common: dict[str, Any],
    callbacks: list[TrainerCallback],
    cfg: dict[str, Any],
    spec: PromptSpec,
) -> DPOTrainer:
    """A ``DPOTrainer`` on the pairs of ``train`` (and ``valid``) prompts, with the training
    arguments ``common`` shared with GRPO."""
    d = cfg["rl"]["dpo"]
    batch = cfg["evaluate"]["batch_size"]
    folder = work / PAIRS_DIR

    def pairs(rows: HFDataset, name: str) -> HFDataset:
        return saved_pairs(
            folder,
            name,
            state,
            lambda: build_pairs(
                model,
                index,
                tok,
                rows["prompt"],
                rows["target"],
                d["rejected"],
                batch,
                cfg["decoding"]["head"],
            ),
        )

    train_pairs = pairs(train, "train")
    valid_pairs = pairs(valid, "valid") if valid is not None else None
    if len(train_pairs) == 0:
        raise SidrecError("no DPO pairs: every prompt's beams were all the target")
    args = DPOConfig(
        **common,
        beta=d["beta"],
        loss_type=[d["loss_type"]],
        max_length=spec.max_length,
        remove_unused_columns=True,
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=train_pairs.select_columns(["prompt", "chosen", "rejected"]),
        eval_dataset=valid_pairs.select_columns(["prompt", "chosen", "rejected"])
        if valid_pairs is not None
        else None,
        processing_class=tok,
        callbacks=callbacks,
    )
    first = trainer.train_dataset[0]
    want = tok(train_pairs[0]["prompt"], add_special_tokens=False)["input_ids"]
    chosen = tok(train_pairs[0]["chosen"], add_special_tokens=False)["input_ids"]
    if first["prompt_ids"] != want or first["chosen_ids"] != chosen + [tok.eos_token_id]:
        raise SidrecError(
            "DPOTrainer tokenised a pair differently from the rollout and evaluation encoding "
            "(prompt, then the SID's tokens and end-of-sequence)"
        )
    return trainer
