"""``sidrec sft``: fine-tune a causal LM to emit the next item's SID, on TRL's SFTTrainer.

The examples (``sidrec convert``) are tokenized here into ``input_ids`` plus a
``completion_mask``, so the loss covers the completion only (for ``sid_sequence`` examples:
every item after the first). Modes: ``full``, ``lora`` (peft; the new SID token rows train
too, and the adapter is merged at the end) and ``embeddings`` (only the new SID token rows of
the input embeddings and of the output head train).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
from accelerate import PartialState
from datasets import Dataset as HFDataset
from transformers import EarlyStoppingCallback, PreTrainedModel, Trainer
from trl import SFTConfig, SFTTrainer
from trl.trainer.utils import pad

from sidrec.data.dataset import read_dataset
from sidrec.errors import InputError, SidrecError, require_file
from sidrec.io import MANIFEST, read_json, write_json
from sidrec.manifest import Run
from sidrec.prompts import encode_prompt, wants_chat_template
from sidrec.sft.convert import SEQUENCE_TASK, main_prompt_spec
from sidrec.sft.models import (
    add_sid_tokens,
    load_base_model,
    set_generation_defaults,
    sid_vocabulary,
)
from sidrec.sids import read_sid_dir
from sidrec.training import (
    CHECKPOINTS,
    accumulation_steps,
    last_checkpoint,
    prepare_output,
    swanlab_callbacks,
    use_bf16,
)

MODES = ("full", "lora", "embeddings")
TRAIN_LOG = "train_log.json"


def tokenize_examples(
    df: pl.DataFrame, tok: Any, chat: bool, max_length: int
) -> tuple[HFDataset, int]:
    """``input_ids`` and ``completion_mask`` per example; drops (and counts) the too long.

    The completion ends with end-of-sequence, except in ``sid_sequence`` examples, whose
    sequence goes on past the window.
    """
    ids, masks = [], []
    dropped = 0
    eos = [tok.eos_token_id]
    for prompt, completion, task in df.iter_rows():
        p = encode_prompt(tok, prompt, chat and task != SEQUENCE_TASK)
        c = tok(completion, add_special_tokens=False)["input_ids"]
        c = c if task == SEQUENCE_TASK else c + eos
        if len(p) + len(c) > max_length:
            dropped += 1
            continue
        ids.append(p + c)
        masks.append([0] * len(p) + [1] * len(c))
    return HFDataset.from_dict({"input_ids": ids, "completion_mask": masks}), dropped


@dataclass
class CompletionWindowCollator:
    """Left-pads a batch (position ids from the mask) and asks the model for logits only over
    the last ``k + 1`` positions, where ``k`` is the longest labelled span of the batch.

    Left padding lines every completion up at the right edge, so for SID completions (4 or 5
    tokens after a prompt of 50-150) the output head, by far the most costly layer with a
    150k-token vocabulary, runs on a few positions instead of all of them. Labels are cut to
    the same window; the model's own shifted loss is unchanged.
    """

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [torch.as_tensor(e["input_ids"]) for e in examples]
        labels = [torch.as_tensor(e["labels"]) for e in examples]
        span = max(
            len(lab) - int((lab != -100).nonzero()[0]) if (lab != -100).any() else 1
            for lab in labels
        )
        input_ids = pad(ids, padding_value=self.pad_token_id, padding_side="left")
        mask = pad([torch.ones_like(i) for i in ids], padding_value=0, padding_side="left")
        padded = pad(labels, padding_value=-100, padding_side="left")
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
            "labels": padded[:, -(span + 1) :],
            "logits_to_keep": span + 1,
        }


class SidSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss is the model's own on the :class:`CompletionWindowCollator`
    window (TRL's fused head scores every position on devices without Triton)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001, ANN201
        inputs["use_cache"] = False
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)


def _check_unknown_tokens(data: HFDataset, tok: Any, where: Path) -> None:
    unk = tok.unk_token_id
    if unk is None:
        return
    for row, ids in enumerate(data["input_ids"]):
        if unk in ids:
            raise InputError(
                where,
                "an example has text the tokenizer cannot represent (a SID-only vocabulary "
                "takes SID tokens only: use the main task with a template of just {history})",
                row=row + 1,
                row_label="example",
            )


def _train_only_rows(model: PreTrainedModel, rows: list[int]) -> None:
    """Freeze everything but ``rows`` of the input embeddings and the output head."""
    model.requires_grad_(False)
    frozen = torch.ones(model.get_input_embeddings().weight.shape[0], 1, dtype=torch.bool)
    frozen[rows] = False
    weights = {id(w): w for w in (model.get_input_embeddings().weight,)}
    head = model.get_output_embeddings()
    if head is not None:
        weights[id(head.weight)] = head.weight

    def keep_rows(grad: torch.Tensor) -> torch.Tensor:
        return grad.masked_fill(frozen.to(grad.device), 0)

    for w in weights.values():
        w.requires_grad_(True)
        w.register_hook(keep_rows)


# the projections that end each attention and MLP sublayer in Llama-family models (Qwen2,
# Llama, SmolLM2, Mistral): dropout on their output is the classic residual dropout
RESIDUAL_OUTPUTS = ("o_proj", "down_proj")


def add_dropout(model: PreTrainedModel, embedding: float, residual: float) -> None:
    """Dropout while training on the input embeddings' output (``embedding``) and on every
    attention and MLP sublayer's output before it joins the residual stream (``residual``).
    Qwen2 has attention dropout only; small models trained from scratch on small data overfit
    without more."""

    def hook(p: float) -> Any:
        def drop(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.dropout(output, p, module.training)

        return drop

    if embedding > 0:
        model.get_input_embeddings().register_forward_hook(hook(embedding))
    if residual > 0:
        ends = [m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in RESIDUAL_OUTPUTS]
        if not ends:
            raise SidrecError(
                f"sft.residual_dropout needs sublayers named {' or '.join(RESIDUAL_OUTPUTS)} "
                f"(Llama-family models); {type(model).__name__} has none"
            )
        for module in ends:
            module.register_forward_hook(hook(residual))


def _apply_mode(model: PreTrainedModel, cfg: dict[str, Any], sid_ids: list[int]) -> Any:
    """The model to train for ``sft.mode`` (``sid_ids``: the rows of the SID tokens)."""
    mode = cfg["sft"]["mode"]
    if mode == "embeddings":
        if cfg["sft"]["weight_decay"]:
            raise SidrecError(
                "sft.mode=embeddings needs sft.weight_decay=0 (decay moves frozen rows)"
            )
        _train_only_rows(model, sid_ids)
        return model
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = cfg["sft"]["lora"]
        tied = model.get_output_embeddings() is None or (
            model.get_output_embeddings().weight is model.get_input_embeddings().weight
        )
        return get_peft_model(
            model,
            LoraConfig(
                task_type="CAUSAL_LM",
                r=lora["r"],
                lora_alpha=lora["alpha"],
                lora_dropout=lora["dropout"],
                target_modules=lora["target_modules"],
                trainable_token_indices=sid_ids,
                modules_to_save=None if tied else ["lm_head"],
            ),
        )
    return model


def train_sft(
    examples: str | Path,
    out: str | Path,
    cfg: dict[str, Any],
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``cfg["model"]`` on the examples directory ``examples``; write the model,
    its extended tokenizer, ``prompting.json``, ``train_log.json``, the config and a manifest
    into ``out``. Returns the manifest (on the main process; others return an empty dict)."""
    examples, out = Path(examples), Path(out)
    s = cfg["sft"]
    if s["mode"] not in MODES:
        raise SidrecError(f"sft.mode must be one of {MODES}, got {s['mode']!r}")
    manifest = read_json(require_file(examples / MANIFEST, "examples manifest (run convert)"))
    if manifest.get("format") != s["format"]:
        raise SidrecError(
            f"{examples} holds sft.format={manifest.get('format')} examples but the config says "
            f"sft.format={s['format']}; run convert again"
        )
    # without a GPU, processes started by torchrun meet over gloo (accelerate needs cpu=True)
    cpu = not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    accum = accumulation_steps(
        s["global_batch_size"], s["per_device_batch_size"], state.num_processes
    )
    bf16 = use_bf16(s["bf16"])
    # an unfinished run is refused (or cleared, or resumed) before any model is loaded
    if state.is_main_process:
        prepare_output(out, resume, overwrite)
    state.wait_for_everyone()
    last = last_checkpoint(out) if resume else None
    table = read_sid_dir(manifest["inputs"]["sid"])
    ds, _ = read_dataset(manifest["inputs"]["data"])
    titles = [t or "" for t in ds.items["title"].to_list()]

    run = Run("sft", cfg, {"examples": str(examples), **manifest["inputs"]}, cfg["seed"])
    model, tok = load_base_model(cfg, cfg["seed"], table)
    added = add_sid_tokens(model, tok, table, cfg["model"]["sid_token_init"], titles)
    sid_ids = tok.convert_tokens_to_ids(sid_vocabulary(table))
    chat = wants_chat_template(tok, s["chat_template"], s["format"])
    train_df = pl.read_parquet(require_file(examples / "train.parquet", "train examples"))
    valid_df = pl.read_parquet(require_file(examples / "valid.parquet", "valid examples"))
    train, dropped = tokenize_examples(train_df, tok, chat, s["max_length"])
    valid, dropped_valid = tokenize_examples(valid_df, tok, chat, s["max_length"])
    _check_unknown_tokens(train, tok, examples / "train.parquet")
    _check_unknown_tokens(valid, tok, examples / "valid.parquet")
    if len(train) == 0:
        raise SidrecError(f"every training example is longer than sft.max_length={s['max_length']}")
    add_dropout(model, s["embedding_dropout"], s["residual_dropout"])
    model = _apply_mode(model, cfg, sid_ids)

    has_valid = len(valid) > 0
    args = SFTConfig(
        output_dir=str(out / CHECKPOINTS),
        num_train_epochs=s["epochs"],
        max_steps=s["max_steps"],
        learning_rate=s["learning_rate"],
        lr_scheduler_type=s["lr_scheduler"],
        warmup_steps=s["warmup_ratio"],
        weight_decay=s["weight_decay"],
        per_device_train_batch_size=s["per_device_batch_size"],
        per_device_eval_batch_size=s["per_device_batch_size"],
        gradient_accumulation_steps=accum,
        activation_checkpointing=s["gradient_checkpointing"],
        bf16=bf16,
        eval_strategy="steps" if has_valid else "no",
        eval_steps=s["eval_steps"],
        eval_on_start=has_valid,
        save_strategy="steps",
        save_steps=s["eval_steps"],
        save_total_limit=s["save_total_limit"],
        load_best_model_at_end=has_valid,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=s["logging_steps"],
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        completion_only_loss=True,
        max_length=None,
        dataloader_num_workers=s["dataloader_workers"],
        report_to="none",
        use_cpu=cpu,
        # batches of similar lengths: little padding when lengths vary (whole sequences)
        train_sampling_strategy="group_by_length" if s["group_by_length"] else "random",
        prediction_loss_only=True,
        seed=cfg["seed"],
        data_seed=cfg["seed"],
        disable_tqdm=False,
    )
    callbacks = swanlab_callbacks(cfg, out, "sft")
    if has_valid and s["early_stopping_patience"] > 0:
        callbacks.append(EarlyStoppingCallback(s["early_stopping_patience"]))
    trainer = SidSFTTrainer(
        model=model,
        args=args,
        data_collator=CompletionWindowCollator(tok.pad_token_id),
        train_dataset=train,
        eval_dataset=valid if has_valid else None,
        processing_class=tok,
        callbacks=callbacks,
    )
    result = trainer.train(resume_from_checkpoint=last)
    if not trainer.is_world_process_zero():
        return {}
    final = trainer.model
    if s["mode"] == "lora":
        final = final.merge_and_unload()
    set_generation_defaults(final, tok, cfg["generation"])
    final.save_pretrained(out)
    tok.save_pretrained(out)
    main_prompt_spec(cfg, chat).save(out)
    history = trainer.state.log_history
    write_json(out / TRAIN_LOG, history)
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    counts = {
        "train_examples": len(train),
        "valid_examples": len(valid),
        "dropped_too_long": {"train": dropped, "valid": dropped_valid},
        "sid_tokens_added": added,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "tokens_seen": trainer.state.num_input_tokens_seen,
    }
    return run.finish(
        out,
        counts,
        mode=s["mode"],
        format=s["format"],
        base_model=cfg["model"]["name_or_path"],
        resumed_from=Path(last).name if last else None,
        train_loss=result.training_loss,
        eval_loss_first=evals[0] if evals else None,
        eval_loss_best=min(evals) if evals else None,
        eval_loss_last=evals[-1] if evals else None,
        best_checkpoint=Path(trainer.state.best_model_checkpoint).name
        if trainer.state.best_model_checkpoint
        else None,
        train_seconds=result.metrics.get("train_runtime"),
        # evaluations included
        tokens_per_second=(
            trainer.state.num_input_tokens_seen / result.metrics["train_runtime"]
            if result.metrics.get("train_runtime")
            else None
        ),
        processes=state.num_processes,
        gradient_accumulation_steps=accum,
        bf16=bf16,
    )
