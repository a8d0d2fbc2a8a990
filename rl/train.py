"""``sidrec rl``: GRPO on ``trl.GRPOTrainer`` with constrained beam-search rollouts.

The group of a prompt is the G beams of :func:`sidrec.decoding.beam_search` over the model's
own SIDs (the ones bundled with it), so every completion is a catalog SID plus end-of-sequence
and the group holds G distinct items, best first, as in MiniOneRec. Rollouts come in through
TRL's supported hook, ``rollout_func``: it receives the process's prompts already repeated G
times and returns the completions; each completion's rank in its group and its SID reach the
reward functions as extra fields, so no reward assumes an order. Rewards are
:mod:`sidrec.rl.rewards`, scored against the target of each example row.

The prompts are the SFT model's own (its ``prompting.json``, histories shortened the same way).
The output is a model directory of the same form as SFT's, usable by ``evaluate``,
``recommend`` and another ``rl``.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from datasets import Dataset as HFDataset
from trl import GRPOConfig, GRPOTrainer

from sidrec.data.dataset import read_dataset
from sidrec.decoding import PrefixIndex, beam_search
from sidrec.embeddings import load_embeddings
from sidrec.errors import InputError, SidrecError
from sidrec.manifest import Run
from sidrec.model_dir import bundle, load_sid_model, model_items, model_sids
from sidrec.prompts import PromptSpec, render_prompt
from sidrec.rl.rewards import check_rewards, combined
from sidrec.sequences import query_rows
from sidrec.sids import sid_tokens
from sidrec.training import (
    CHECKPOINTS,
    claim_output,
    last_checkpoint,
    publish_model,
    swanlab_callbacks,
    train_or_finish,
    use_bf16,
)
from sidrec.validation import RankingValidation

TRAINING_SECTIONS = ("seed", "rl")


def rl_examples(
    histories: list[list[int]],
    targets: list[int],
    sids: list[str],
    spec: PromptSpec,
    tok: Any,
    answer_tokens: int,
) -> tuple[HFDataset, int]:
    """One example per row: ``prompt`` (the model's prompt text, history shortened as the
    model was trained) and ``target`` (the item id); returns them and how many histories were
    shortened."""
    prompts, cut = [], 0
    for history in histories:
        kept = [sids[i] for i in history]
        dropped = spec.encode(tok, kept, answer_tokens)[1]
        cut += dropped > 0
        prompts.append(render_prompt(tok, spec.history_text(kept[dropped:]), spec.chat_template))
    return HFDataset.from_dict({"prompt": prompts, "target": targets}), cut


class BeamRollout:
    """TRL's ``rollout_func``: the G beams of a constrained beam search for each prompt.

    The process's prompts arrive repeated G times in a row (TRL's repeat sampler; a device
    batch is a multiple of G, checked before training, so no group is split across
    processes). Returns ``prompt_ids``, ``completion_ids`` (the SID's tokens and
    end-of-sequence), ``logprobs`` (None: rollouts come from the policy itself, there is no
    sampler mismatch to correct), and per completion ``beam_rank`` and ``beam_sid``.
    """

    def __init__(self, index: PrefixIndex, tok: Any, num_generations: int) -> None:
        self.index, self.tok, self.g = index, tok, num_generations
        eos = [tok.eos_token_id]
        self.completion = [
            tok.convert_tokens_to_ids(sid_tokens(codes)) + eos for codes in index.catalog.codes
        ]
        self.seconds = 0.0

    def __call__(self, prompts: list[str], trainer: GRPOTrainer) -> dict[str, Any]:
        started = time.perf_counter()
        g = self.g
        if len(prompts) % g or any(
            len(set(prompts[i : i + g])) != 1 for i in range(0, len(prompts), g)
        ):
            raise SidrecError(
                f"rollout: expected each prompt {g} times in a row, got {len(prompts)} prompts"
            )
        unique = prompts[::g]
        ids = [self.tok(p, add_special_tokens=False)["input_ids"] for p in unique]
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()  # beams without dropout
        try:
            top, _ = beam_search(model, self.index, ids, g, self.tok.pad_token_id)
        finally:
            model.train(was_training)
        beams = top.cpu().tolist()
        self.seconds += time.perf_counter() - started
        return {
            "prompt_ids": [p for p in ids for _ in range(g)],
            "completion_ids": [self.completion[s] for row in beams for s in row],
            "logprobs": None,
            "beam_rank": [r for _ in beams for r in range(g)],
            "beam_sid": [s for row in beams for s in row],
        }


class SidGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` that scores only the completion positions.

    TRL's fused LM head scores every position of prompt and completion; with Qwen2's
    150k-token vocabulary and prompts of 100+ tokens that was most of a step on CPU (20 s a
    step on the demo). The model's own ``logits_to_keep`` keeps the output head to the
    completion (a SID and end-of-sequence), and positions come from the attention mask, as in
    SFT and in beam search. Text models only (no images, no MoE auxiliary loss).
    """

    def _get_per_token_logps_and_entropies(  # noqa: ANN201
        self,
        model,  # noqa: ANN001
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_to_keep: int,
        batch_size: int | None = None,
        compute_entropy: bool = False,
        compute_aux_loss: bool = False,
        **_: Any,
    ):
        """Log-probs (B, C) of the last ``logits_to_keep`` tokens of ``input_ids`` (B, P + C),
        their entropies (B, C) when asked, and no auxiliary loss."""
        size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), size):
            ids, mask = input_ids[start : start + size], attention_mask[start : start + size]
            position = (mask.cumsum(-1) - 1).clamp(min=0)
            with self.accelerator.autocast():
                logits = model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=position,
                    logits_to_keep=logits_to_keep + 1,
                    use_cache=False,
                ).logits
            logp = (logits[:, :-1].float() / self.temperature).log_softmax(-1)
            logps.append(logp.gather(-1, ids[:, -logits_to_keep:, None]).squeeze(-1))
            if compute_entropy:
                entropies.append(-(logp.exp() * logp).sum(-1))
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None


def reward_functions(
    weights: dict[str, float],
    item_sid: np.ndarray,
    num_generations: int,
    vectors: np.ndarray | None,
) -> list[Any]:
    """One TRL reward function per weighted reward (named after it, for the logs), each
    scoring completions by their group's beams against the row's own target."""
    g = num_generations

    def make(name: str) -> Any:
        def reward(
            prompts: list[str],
            completions: list[str],
            beam_rank: list[int],
            beam_sid: list[int],
            target: list[int],
            **_: Any,
        ) -> list[float]:
            n = len(beam_sid) // g
            beams = np.empty((n, g), dtype=np.int64)
            rank = np.asarray(beam_rank).reshape(n, g)
            np.put_along_axis(beams, rank, np.asarray(beam_sid).reshape(n, g), axis=1)
            goal = item_sid[np.asarray(target).reshape(n, g)[:, 0]]
            r = combined({name: 1.0}, beams, goal, vectors)[name]
            return np.take_along_axis(r, rank, axis=1).reshape(-1).tolist()

        reward.__name__ = name
        return reward

    return [make(name) for name, w in weights.items() if w]


def train_rl(
    model_dir: str | Path,
    data: str | Path,
    out: str | Path,
    cfg: dict[str, Any],
    embeddings: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """GRPO from the model in ``model_dir`` on ``data``'s training rows; write a model
    directory into ``out`` (checkpoints in ``<out>.partial/`` until done). Returns the
    manifest (an empty dict on processes other than the main one)."""
    model_dir, out = Path(model_dir), Path(out)
    r = cfg["rl"]
    g = r["num_generations"]
    check_rewards(r["rewards"], embeddings is not None)
    if g < 2 or r["per_device_batch_size"] % g:
        raise SidrecError(
            f"rl.num_generations={g} must be >= 2 and divide rl.per_device_batch_size="
            f"{r['per_device_batch_size']} (a device batch holds whole groups)"
        )
    if not 0 <= r["warmup_ratio"] < 1:
        raise SidrecError(f"rl.warmup_ratio must be in [0, 1), got {r['warmup_ratio']}")
    spec = PromptSpec.load(model_dir)
    table, sid_dir = model_sids(model_dir)
    ds, _ = read_dataset(data)
    if ds.items.height != len(table.codes):
        raise InputError(data, f"has {ds.items.height} items, the model's SIDs {len(table.codes)}")
    state = PartialState(cpu=not torch.cuda.is_available())
    bf16 = use_bf16(r["bf16"])
    model, tok = load_sid_model(model_dir, state.device, False)
    index = PrefixIndex.for_tokenizer(table, tok, model.config.vocab_size, state.device)
    n_sids = len(index.catalog.codes)
    if g > n_sids:
        raise SidrecError(f"rl.num_generations={g} exceeds the catalog's {n_sids} distinct SIDs")
    vectors = None
    if embeddings is not None:
        emb = load_embeddings(embeddings)
        if emb.shape[0] != len(table.codes):
            raise InputError(embeddings, f"has {emb.shape[0]} rows for {len(table.codes)} items")
        vectors = emb[index.catalog.representative]
    rows = ds.train
    if 0 < r["sample_size"] < rows.height:
        rows = rows.sample(n=r["sample_size"], seed=cfg["seed"]).sort("user_id")
    answer = index.depth + 1
    train, shortened = rl_examples(
        rows["history"].to_list(), rows["target"].to_list(), table.sids, spec, tok, answer
    )
    has_valid = r["eval_steps"] > 0
    valid = ranking = None
    if has_valid:
        if r["save_steps"] % r["eval_steps"]:
            raise SidrecError(
                f"rl.save_steps={r['save_steps']} must be a multiple of rl.eval_steps="
                f"{r['eval_steps']} (the best checkpoint is chosen at evaluations)"
            )
        rows_v = query_rows(ds, "valid", r["valid_users"], cfg["seed"])
        valid, _ = rl_examples(
            rows_v["history"].to_list(), rows_v["target"].to_list(), table.sids, spec, tok, answer
        )
        e = cfg["evaluate"]
        ranking = RankingValidation(
            index,
            [tok(p, add_special_tokens=False)["input_ids"] for p in valid["prompt"]],
            index.catalog.item_sid[rows_v["target"].to_numpy()],
            e["num_beams"],
            tok.pad_token_id,
            e["batch_size"],
        )
    run = Run("rl", cfg, {"model": str(model_dir), "data": str(data)}, cfg["seed"])
    with ExitStack() as stack:
        settings = {k: cfg[k] for k in TRAINING_SECTIONS}
        work = claim_output(stack, state, out, run, settings, resume, overwrite)
        last = last_checkpoint(work) if resume else None
        rollout = BeamRollout(index, tok, g)
        args = GRPOConfig(
            output_dir=str(work / CHECKPOINTS),
            num_generations=g,
            max_completion_length=index.depth + 1,
            beta=r["beta"],
            loss_type=r["loss_type"],
            learning_rate=r["learning_rate"],
            lr_scheduler_type=r["lr_scheduler"],
            warmup_steps=r["warmup_ratio"],  # below 1: a fraction of the steps
            max_grad_norm=r["max_grad_norm"],
            num_train_epochs=r["epochs"],
            max_steps=r["max_steps"],
            per_device_train_batch_size=r["per_device_batch_size"],
            per_device_eval_batch_size=r["per_device_batch_size"],
            eval_strategy="steps" if has_valid else "no",
            eval_steps=r["eval_steps"] if has_valid else None,
            load_best_model_at_end=has_valid,
            metric_for_best_model="eval_ndcg@10" if has_valid else None,
            greater_is_better=True if has_valid else None,
            gradient_accumulation_steps=r["gradient_accumulation_steps"],
            logging_steps=r["logging_steps"],
            logging_first_step=True,
            save_strategy="steps",
            save_steps=r["save_steps"],
            save_total_limit=r["save_total_limit"],
            bf16=bf16,
            use_cpu=state.device.type == "cpu",
            report_to="none",
            seed=cfg["seed"],
            data_seed=cfg["seed"],
        )
        reward_funcs = reward_functions(r["rewards"], index.catalog.item_sid, g, vectors)
        args.reward_weights = [r["rewards"][f.__name__] for f in reward_funcs]
        callbacks = swanlab_callbacks(cfg, work, "rl") + ([ranking] if ranking else [])
        trainer = SidGRPOTrainer(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train,
            eval_dataset=valid,
            processing_class=tok,
            callbacks=callbacks,
            rollout_func=rollout,
        )
        if ranking is not None:
            ranking.trainer = trainer
        train_loss, train_seconds = train_or_finish(trainer, last)
        if not trainer.is_world_process_zero():
            return {}
        history = trainer.state.log_history
        counts = {
            "train_examples": len(train),
            "shortened_histories": shortened,
            "steps": trainer.state.global_step,
            "epochs": trainer.state.epoch,
        }
        rewards = [h["reward"] for h in history if "reward" in h]
        ndcg = [h["eval_ndcg@10"] for h in history if "eval_ndcg@10" in h]
        swanlab_on = cfg["swanlab"]["mode"] != "disabled"
        with publish_model(out, work, trainer.model, tok, spec, history, swanlab_on) as tmp:
            digest = bundle(tmp, sid_dir, model_items(model_dir))
            return run.finish(
                tmp,
                counts,
                base_model=str(model_dir),
                sid_hash=digest,
                resumed_from=Path(last).name if last else None,
                train_loss=train_loss,
                train_seconds=train_seconds,
                rollout_seconds=round(rollout.seconds, 3),
                reward_first=rewards[0] if rewards else None,
                reward_last=rewards[-1] if rewards else None,
                valid_ndcg10_first=ndcg[0] if ndcg else None,
                valid_ndcg10_best=trainer.state.best_metric,
                best_checkpoint=Path(trainer.state.best_model_checkpoint).name
                if trainer.state.best_model_checkpoint
                else None,
                processes=state.num_processes,
                bf16=bf16,
            )
