"""``sidrec sft``: fine-tune a causal LM to emit the next item's SID, on TRL's SFTTrainer.

The examples (``sidrec convert``) are tokenized here into ``input_ids`` plus a
``completion_mask``, so the loss covers the completion only (for ``sid_sequence`` examples:
every item after the first). Modes: ``full``, ``lora`` (peft; the new SID token rows train
too, and the adapter is merged at the end) and ``embeddings`` (only the new SID token rows of
the input embeddings and of the output head train).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
import torch
from accelerate import PartialState
from datasets import Dataset as HFDataset
from transformers import EarlyStoppingCallback, PreTrainedModel, Trainer
from trl import SFTConfig, SFTTrainer
from trl.trainer.utils import pad

from sidrec.core.dataset import Dataset, read_dataset
from sidrec.core.decoding import build_decoder
from sidrec.core.errors import InputError, SidrecError, require_file
from sidrec.core.examples import EXAMPLE_SCHEMA, SEQUENCE_TASK
from sidrec.core.io import MANIFEST, read_json
from sidrec.core.manifest import Run
from sidrec.core.model_dir import bundle
from sidrec.core.prompts import (
    PROMPTING_FILE,
    PromptSpec,
    encode_prompt,
    fit_example_prompt,
    history_separator,
    wants_chat_template,
)
from sidrec.core.sequences import query_rows
from sidrec.core.sids import SidTable, read_sid_dir
from sidrec.core.training import (
    CHECKPOINTS,
    TimeBudget,
    accumulation_steps,
    claim_output,
    last_checkpoint,
    publish_model,
    swanlab_callbacks,
    swanlab_on,
    train_or_finish,
    use_bf16,
    work_dir,
)
from sidrec.core.validation import RankingValidation, metric_for_best
from sidrec.sft.models import (
    add_sid_tokens,
    load_base_model,
    set_generation_defaults,
    sid_vocabulary,
)

MODES = ("full", "lora", "embeddings")
# what an unfinished run must have been started with to be resumed (besides its inputs)
TRAINING_SECTIONS = ("seed", "model", "generation", "sft", "decoding")


def tokenize_examples(
    df: pl.DataFrame, tok: Any, chat: bool, max_length: int, item_separator: str
) -> tuple[HFDataset, dict[str, int]]:
    """``input_ids`` and ``completion_mask`` per example, and counts of the examples whose
    history lost its oldest items to fit ``max_length`` (``truncated``) and of those that could
    not fit at all (``dropped_too_long``: no history to shorten).

    The completion ends with end-of-sequence, except in ``sid_sequence`` examples, whose
    sequence goes on past the window; those must fit as they are (their length is set by the
    dataset's history length).
    """
    ids, masks = [], []
    counts = {"truncated": 0, "dropped_too_long": 0}
    eos = [tok.eos_token_id]
    rows = df.select("prompt", "completion", "task", "template", "history").iter_rows()
    for prompt, completion, task, template, history in rows:
        wrap = chat and task != SEQUENCE_TASK
        c = tok(completion, add_special_tokens=False)["input_ids"]
        c = c if task == SEQUENCE_TASK else c + eos
        if task == SEQUENCE_TASK:
            p = encode_prompt(tok, prompt, wrap)
            if len(p) + len(c) > max_length:
                raise SidrecError(
                    f"a training window is {len(p) + len(c)} tokens, more than "
                    f"sft.max_length={max_length}: raise sft.max_length or lower "
                    "data.max_history (a window holds max_history + 1 items)"
                )
        else:
            sep = history_separator(task, item_separator)
            p, _, shortened = fit_example_prompt(
                tok, prompt, template, history, sep, wrap, max_length - len(c)
            )
            if p is None:
                counts["dropped_too_long"] += 1
                continue
            counts["truncated"] += shortened
        ids.append(p + c)
        masks.append([0] * len(p) + [1] * len(c))
    return HFDataset.from_dict({"input_ids": ids, "completion_mask": masks}), counts


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


def _ranking_validation(
    ds: Any, table: Any, spec: PromptSpec, tok: Any, model: Any, cfg: dict[str, Any]
) -> RankingValidation:
    """Validation by NDCG@10: a seeded sample of ``sft.valid_users`` validation users (0 =
    all), prompted as in evaluation, decoded with ``evaluate.num_beams`` beams."""
    rows = query_rows(ds, "valid", cfg["sft"]["valid_users"], cfg["seed"])
    index = build_decoder(model, tok, table, cfg["decoding"]["head"]).index
    sids = table.sids
    prompts = [
        spec.encode(tok, [sids[i] for i in h], index.depth + 1)[0]
        for h in rows["history"].to_list()
    ]
    targets = index.catalog.item_sid[rows["target"].to_numpy()]
    e = cfg["evaluate"]
    return RankingValidation(
        index,
        prompts,
        targets,
        e["num_beams"],
        tok.pad_token_id,
        e["batch_size"],
        cfg["decoding"]["head"],
        e["auto_batch_seconds"],
    )


def _read_examples(examples: Path, name: str) -> pl.DataFrame:
    path = require_file(examples / f"{name}.parquet", f"{name} examples")
    df = pl.read_parquet(path)
    missing = [c for c in EXAMPLE_SCHEMA if c not in df.columns]
    if missing:
        raise InputError(
            path,
            f"expected columns {list(EXAMPLE_SCHEMA)}, missing {missing} "
            "(made by an older sidrec?); run convert again",
        )
    return df


def train_sft(
    examples: str | Path,
    out: str | Path,
    cfg: dict[str, Any],
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``cfg["model"]`` on the examples directory ``examples``; write the model,
    its extended tokenizer, ``prompting.json``, the bundled SIDs and items, ``train_log.json``,
    the config and a manifest into ``out``. Returns the manifest (on the main process; others
    return an empty dict).

    Checkpoints live in ``<out>.partial/`` until the run is complete; ``out`` appears (or is
    replaced) in one step, with everything in it, and the checkpoints are dropped after.
    """
    examples, out = Path(examples), Path(out)
    s = cfg["sft"]
    if s["mode"] not in MODES:
        raise SidrecError(f"sft.mode must be one of {MODES}, got {s['mode']!r}")
    best_metric, higher_is_better = metric_for_best(s["select_by"])
    if not 0 <= s["warmup_ratio"] < 1:
        raise SidrecError(
            f"sft.warmup_ratio is a fraction of the training steps: it must be in [0, 1), "
            f"got {s['warmup_ratio']}"
        )
    manifest = read_json(require_file(examples / MANIFEST, "examples manifest (run convert)"))
    if manifest.get("format") != s["format"]:
        raise SidrecError(
            f"{examples} holds sft.format={manifest.get('format')} examples but the config says "
            f"sft.format={s['format']}; run convert again"
        )
    if not (examples / PROMPTING_FILE).exists():
        raise InputError(
            examples, f"has no {PROMPTING_FILE} (made by an older sidrec?); run convert again"
        )
    example_spec = PromptSpec.load(examples)
    # without a GPU, processes started by torchrun meet over gloo (accelerate needs cpu=True)
    state = PartialState(cpu=not torch.cuda.is_available())
    accum = accumulation_steps(
        s["global_batch_size"], s["per_device_batch_size"], state.num_processes
    )
    bf16 = use_bf16(s["bf16"])
    run = Run("sft", cfg, {"examples": str(examples), **manifest["inputs"]}, cfg["seed"])
    with ExitStack() as stack:
        # an unfinished run is refused (or cleared, or resumed) before any model is loaded
        settings = {k: cfg[k] for k in TRAINING_SECTIONS}
        claim_output(stack, state, out, run, settings, resume, overwrite)
        return _train(
            examples,
            out,
            cfg,
            run,
            state,
            accum,
            bf16,
            example_spec,
            resume,
            best_metric,
            higher_is_better,
        )


def _sft_config(
    cfg: dict[str, Any],
    work: Path,
    device: torch.device,
    accum: int,
    bf16: bool,
    has_valid: bool,
    best: tuple[str, bool],
) -> SFTConfig:
    """TRL's SFT arguments from ``sft.*``; ``best`` = the metric that picks the best
    checkpoint and whether higher is better."""
    s = cfg["sft"]
    return SFTConfig(
        output_dir=str(work / CHECKPOINTS),
        num_train_epochs=s["epochs"],
        max_steps=s["max_steps"],
        learning_rate=s["learning_rate"],
        lr_scheduler_type=s["lr_scheduler"],
        # below 1, transformers reads warmup_steps as a fraction of the training steps
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
        metric_for_best_model=best[0],
        greater_is_better=best[1],
        logging_steps=s["logging_steps"],
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        completion_only_loss=True,
        max_length=None,
        dataloader_num_workers=s["dataloader_workers"],
        report_to="none",
        use_cpu=device.type == "cpu",
        # batches of similar lengths: little padding when lengths vary (whole sequences)
        train_sampling_strategy="group_by_length" if s["group_by_length"] else "random",
        prediction_loss_only=True,
        seed=cfg["seed"],
        data_seed=cfg["seed"],
        disable_tqdm=False,
    )


def _outcome(trainer: Any, seconds: float, select_by: str) -> dict[str, Any]:
    """What the manifest records of a finished run's log: eval losses, how and which best
    checkpoint was chosen, training time (``seconds``) and throughput (evaluations included)."""
    st = trainer.state
    evals = [h["eval_loss"] for h in st.log_history if "eval_loss" in h]
    best = st.best_model_checkpoint
    return {
        "eval_loss_first": evals[0] if evals else None,
        "eval_loss_best": min(evals) if evals else None,
        "eval_loss_last": evals[-1] if evals else None,
        "select_by": select_by,
        "best_metric": st.best_metric,
        "best_checkpoint": Path(best).name if best else None,
        "train_seconds": seconds,
        "tokens_per_second": st.num_input_tokens_seen / seconds if seconds else None,
    }


def _tokenized(
    examples: Path, tok: Any, chat: bool, spec: PromptSpec
) -> tuple[HFDataset, HFDataset, dict[str, dict[str, int]]]:
    """The train and valid examples tokenized (prompts fitted to ``spec.max_length``), and per
    split how many were shortened (``truncated``) or dropped (``dropped_too_long``)."""
    splits, fitted = {}, {}
    for split in ("train", "valid"):
        df = _read_examples(examples, split)
        splits[split], fitted[split] = tokenize_examples(
            df, tok, chat, spec.max_length, spec.separator
        )
        _check_unknown_tokens(splits[split], tok, examples / f"{split}.parquet")
    counts = {
        "truncated_history": {k: f["truncated"] for k, f in fitted.items()},
        "dropped_too_long": {k: f["dropped_too_long"] for k, f in fitted.items()},
    }
    return splits["train"], splits["valid"], counts


def _trainer(
    model: Any,
    tok: Any,
    args: SFTConfig,
    train: HFDataset,
    valid: HFDataset,
    ds: Dataset,
    table: SidTable,
    spec: PromptSpec,
    cfg: dict[str, Any],
) -> SidSFTTrainer:
    """The SFT trainer with its callbacks: SwanLab, ranking validation (``sft.select_by``
    other than loss) and early stopping, when there are valid examples."""
    s = cfg["sft"]
    callbacks = swanlab_callbacks(cfg, "sft")
    ranking = None
    if len(valid) and s["select_by"] != "loss":
        ranking = _ranking_validation(ds, table, spec, tok, model, cfg)
        callbacks.append(ranking)  # before early stopping, which reads its metric
    if len(valid) and s["early_stopping_patience"] > 0:
        callbacks.append(EarlyStoppingCallback(s["early_stopping_patience"]))
    callbacks.append(TimeBudget(s["max_minutes"]))
    trainer = SidSFTTrainer(
        model=model,
        args=args,
        data_collator=CompletionWindowCollator(tok.pad_token_id),
        train_dataset=train,
        eval_dataset=valid if len(valid) else None,
        processing_class=tok,
        callbacks=callbacks,
    )
    if ranking is not None:
        ranking.trainer = trainer
    return trainer


def _train(
    examples: Path,
    out: Path,
    cfg: dict[str, Any],
    run: Run,
    state: PartialState,
    accum: int,
    bf16: bool,
    example_spec: PromptSpec,
    resume: bool,
    best_metric: str,
    higher_is_better: bool,
) -> dict[str, Any]:
    s = cfg["sft"]
    work = work_dir(out)
    last = last_checkpoint(work) if resume else None
    sid_dir = Path(run.inputs["sid"])
    table = read_sid_dir(sid_dir)
    ds, _ = read_dataset(run.inputs["data"])
    titles = [t or "" for t in ds.items["title"].to_list()]

    model, tok = load_base_model(cfg, cfg["seed"], table)
    added = add_sid_tokens(model, tok, table, cfg["model"]["sid_token_init"], titles)
    sid_ids = tok.convert_tokens_to_ids(sid_vocabulary(table))
    chat = wants_chat_template(tok, s["chat_template"], s["format"])
    spec = replace(example_spec, chat_template=chat, max_length=s["max_length"])
    train, valid, fitted = _tokenized(examples, tok, chat, spec)
    if len(train) == 0:
        raise SidrecError(f"every training example is longer than sft.max_length={s['max_length']}")
    add_dropout(model, s["embedding_dropout"], s["residual_dropout"])
    model = _apply_mode(model, cfg, sid_ids)

    best = (best_metric, higher_is_better)
    args = _sft_config(cfg, work, state.device, accum, bf16, len(valid) > 0, best)
    trainer = _trainer(model, tok, args, train, valid, ds, table, spec, cfg)
    train_loss, train_seconds = train_or_finish(trainer, last)
    if not trainer.is_world_process_zero():
        return {}
    final = trainer.model
    if s["mode"] == "lora":
        final = final.merge_and_unload()
    set_generation_defaults(final, tok, cfg["generation"])
    counts = {
        "train_examples": len(train),
        "valid_examples": len(valid),
        **fitted,
        "sid_tokens_added": added,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "tokens_seen": trainer.state.num_input_tokens_seen,
    }
    history = trainer.state.log_history
    with publish_model(out, work, final, tok, spec, history, swanlab_on(cfg)) as tmp:
        digest = bundle(tmp, sid_dir, ds.items)
        manifest = run.finish(
            tmp,
            counts,
            mode=s["mode"],
            format=s["format"],
            base_model=cfg["model"]["name_or_path"],
            sid_hash=digest,
            resumed_from=Path(last).name if last else None,
            train_loss=train_loss,
            **_outcome(trainer, train_seconds, s["select_by"]),
            processes=state.num_processes,
            gradient_accumulation_steps=accum,
            bf16=bf16,
        )
    return manifest
