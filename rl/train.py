"""``sidrec rl``: GRPO on ``trl.GRPOTrainer`` with constrained beam-search rollouts.

The group of a prompt is the G beams of :func:`sidrec.core.decoding.beam_search` over the model's
own SIDs (the ones bundled with it), so every completion is a catalog SID plus end-of-sequence
and the group holds G distinct items, best first, as in MiniOneRec; ``rl.rollout=sample``
draws G constrained samples instead (:func:`sidrec.core.decoding.constrained_sample`). Rollouts
come in through TRL's supported hook, ``rollout_func``: it receives the process's prompts
already repeated G times and returns the completions; each completion's rank in its group and
its SID reach the reward functions as extra fields, so no reward assumes an order. Rewards are
:mod:`sidrec.rl.rewards`, scored against the target of each example row.

Tasks: ``sid_history`` prompts are the SFT model's own (its ``prompting.json``, histories
shortened the same way); ``title_to_sid`` and ``title_history_to_sid`` prompts are the SFT
examples of those tasks (``sidrec convert``'s ``train.parquet``), whose text holds titles only,
never the answer's SID. The reference model of the KL term is loaded from the local starting
model's directory (none when ``rl.beta`` is 0). The output is a model directory of the same
form as SFT's, usable by ``evaluate``, ``recommend`` and another ``rl``.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from accelerate import PartialState
from datasets import Dataset as HFDataset
from trl import GRPOConfig, GRPOTrainer

from sidrec.core.dataset import Dataset, read_dataset
from sidrec.core.decoding import (
    Catalog,
    Decoder,
    PrefixIndex,
    beam_search,
    constrained_sample,
    load_decoder,
    restricted_log_probs,
)
from sidrec.core.embeddings import load_embeddings
from sidrec.core.errors import InputError, SidrecError, require_file
from sidrec.core.examples import MAIN_TASK
from sidrec.core.manifest import Run
from sidrec.core.model_dir import bundle, model_items, model_sids
from sidrec.core.prompts import PromptSpec, fit_example_prompt, history_separator, render_prompt
from sidrec.core.sasrec_model import SASRec, load_sasrec, score_items
from sidrec.core.sequences import query_rows, weighted_pick
from sidrec.core.sids import SidTable, sid_tokens
from sidrec.core.training import (
    CHECKPOINTS,
    claim_output,
    last_checkpoint,
    publish_model,
    swanlab_callbacks,
    swanlab_on,
    train_or_finish,
    use_bf16,
)
from sidrec.core.tree_model import is_tree_model
from sidrec.core.validation import RankingValidation
from sidrec.rl.rewards import NEEDS_SASREC, check_rewards, combined

TRAINING_SECTIONS = ("seed", "rl", "decoding")
TITLE_TASKS = ("title_to_sid", "title_history_to_sid")
ROLLOUTS = ("beam", "sample")
ALGOS = ("grpo", "dpo")


def history_examples(
    histories: list[list[int]],
    targets: list[int],
    sids: list[str],
    spec: PromptSpec,
    tok: Any,
    answer_tokens: int,
) -> tuple[dict[str, list], int]:
    """The main task's columns, one row per history: ``prompt`` (the model's prompt text,
    history shortened as the model was trained), ``target`` (the SID index of the row's own
    target: ``targets`` are SID indices), ``history`` (item ids) and ``task``; and how many
    histories were shortened."""
    prompts, cut = [], 0
    for history in histories:
        kept = [sids[i] for i in history]
        dropped = spec.encode(tok, kept, answer_tokens)[1]
        cut += dropped > 0
        prompts.append(render_prompt(tok, spec.history_text(kept[dropped:]), spec.chat_template))
    columns = {
        "prompt": prompts,
        "target": list(targets),
        "history": [list(h) for h in histories],
        "task": [MAIN_TASK] * len(prompts),
    }
    return columns, cut


def title_examples(
    examples: Path,
    task: str,
    table: SidTable,
    item_sid: np.ndarray,
    spec: PromptSpec,
    tok: Any,
    answer_tokens: int,
) -> tuple[dict[str, list], int]:
    """The training examples of a title task from ``sidrec convert``'s output, as the columns
    of :func:`history_examples` (no item history), and how many prompts were shortened; the
    target is the SID of the example's own completion."""
    path = require_file(examples / "train.parquet", "the examples' train.parquet")
    df = pl.read_parquet(path).filter(pl.col("task") == task)
    if df.height == 0:
        raise InputError(
            path, f"has no {task} examples, which rl.tasks.{task} asks for: set convert.tasks"
        )
    sid_index = {sid: int(item_sid[item]) for item, sid in enumerate(table.sids)}
    columns: dict[str, list] = {"prompt": [], "target": [], "history": [], "task": []}
    cut = 0
    sep = history_separator(task, spec.separator)
    rows = df.select("prompt", "completion", "template", "history").iter_rows()
    for row, (prompt, completion, template, history) in enumerate(rows):
        if completion not in sid_index:
            raise InputError(path, f"{task} completion {completion!r} is not a SID of the model")
        ids, text, shortened = fit_example_prompt(
            tok, prompt, template, history, sep, spec.chat_template, spec.max_length - answer_tokens
        )
        if ids is None:
            raise InputError(
                path, f"a {task} prompt does not fit max_length={spec.max_length}", row
            )
        cut += shortened
        columns["prompt"].append(render_prompt(tok, text, spec.chat_template))
        columns["target"].append(sid_index[completion])
        columns["history"].append([])
        columns["task"].append(task)
    return columns, cut


def training_rows(
    ds: Dataset,
    examples: Path | None,
    table: SidTable,
    item_sid: np.ndarray,
    spec: PromptSpec,
    tok: Any,
    answer_tokens: int,
    cfg: dict[str, Any],
) -> tuple[HFDataset, dict[str, int]]:
    """RL's training prompts: each task's rows weighted by ``rl.tasks`` (as in ``convert``),
    then a seeded sample of ``rl.sample_size`` of them; and counts per task and of shortened
    prompts."""
    r = cfg["rl"]
    rng = np.random.default_rng(cfg["seed"])
    parts, shortened = [], 0
    for task, weight in r["tasks"].items():
        if weight <= 0:
            continue
        if task == MAIN_TASK:
            rows = ds.train
            cols, cut = history_examples(
                rows["history"].to_list(),
                item_sid[rows["target"].to_numpy()].tolist(),
                table.sids,
                spec,
                tok,
                answer_tokens,
            )
        else:
            if examples is None:
                raise SidrecError(
                    f"rl.tasks.{task} needs the SFT examples (--examples, paths.examples)"
                )
            cols, cut = title_examples(examples, task, table, item_sid, spec, tok, answer_tokens)
        keep = weighted_pick(len(cols["prompt"]), weight, rng)
        parts.append({k: [v[i] for i in keep] for k, v in cols.items()})
        shortened += cut
    if not parts:
        raise SidrecError("rl.tasks needs at least one task with a weight above 0")
    merged = {k: [x for part in parts for x in part[k]] for k in parts[0]}
    n = len(merged["prompt"])
    if 0 < r["sample_size"] < n:
        keep = np.sort(rng.choice(n, r["sample_size"], replace=False))
        merged = {k: [v[i] for i in keep] for k, v in merged.items()}
    counts = {f"rows_{t}": merged["task"].count(t) for t in r["tasks"] if r["tasks"][t] > 0}
    return HFDataset.from_dict(merged), {**counts, "shortened_prompts": shortened}


class Rollout:
    """TRL's ``rollout_func``: G constrained completions for each prompt.

    ``beam``: the G beams of a constrained beam search (distinct SIDs, best first);
    ``sample``: G draws at ``temperature`` within the allowed tokens, from a generator seeded by
    (seed, step, process) so that a resumed run draws what the uninterrupted one would.

    The process's prompts arrive repeated G times in a row (TRL's repeat sampler; a device
    batch is a multiple of G, checked before training, so no group is split across
    processes). Returns ``prompt_ids``, ``completion_ids`` (the SID's tokens and
    end-of-sequence), ``logprobs`` (None: rollouts come from the policy itself, there is no
    sampler mismatch to correct), and per completion ``beam_rank`` (its rank in the group by
    the model's log-probability) and ``beam_sid``.
    """

    def __init__(
        self,
        index: PrefixIndex,
        tok: Any,
        num_generations: int,
        mode: str = "beam",
        temperature: float = 1.0,
        seed: int = 0,
        head: str = "full",
    ) -> None:
        if mode not in ROLLOUTS:
            raise SidrecError(f"rl.rollout must be one of {ROLLOUTS}, got {mode!r}")
        self.index, self.tok, self.g = index, tok, num_generations
        self.mode, self.temperature, self.seed, self.head = mode, temperature, seed, head
        eos = [tok.eos_token_id]
        self.completion = [
            tok.convert_tokens_to_ids(sid_tokens(codes)) + eos for codes in index.catalog.codes
        ]
        self.seconds = 0.0
        self._previous: tuple[float, float] | None = None  # last training rollout: start, time

    def decode(self, model: Any, ids: list[list[int]], step: int, process: int) -> torch.Tensor:
        """(B, G) SID indices for the prompts ``ids``, best first."""
        if self.mode == "beam":
            return beam_search(model, self.index, ids, self.g, self.tok.pad_token_id, self.head)[0]
        gen = torch.Generator(device=model.device)
        gen.manual_seed(
            int(np.random.SeedSequence([self.seed, step, process]).generate_state(1)[0])
        )
        return constrained_sample(
            model, self.index, ids, self.g, self.tok.pad_token_id, self.temperature, gen, self.head
        )[0]

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
        model.eval()  # rollouts without dropout
        try:
            top = self.decode(
                model, ids, trainer.state.global_step, trainer.accelerator.process_index
            )
        finally:
            model.train(was_training)
        beams = top.cpu().tolist()
        elapsed = time.perf_counter() - started
        self.seconds += elapsed
        if was_training:  # logged with the step: this rollout's time, the last step's share
            metrics = trainer._metrics["train"]
            metrics["rollout/seconds"].append(elapsed)
            if self._previous is not None:
                start, seconds = self._previous
                metrics["rollout/share_of_step"].append(seconds / (started - start))
            self._previous = (started, elapsed)
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

    With ``drop_zero_variance`` (dynamic sampling), the completions of groups whose rewards
    are all equal (advantage 0 everywhere: nothing to learn, only KL) leave the loss: their
    tokens are masked out and the token count that normalises ``dapo`` / ``bnpo`` losses counts
    the kept tokens only. TRL logs their share either way (``frac_reward_zero_std``).
    """

    drop_zero_variance = False
    # the index of rollouts decoded with decoding.head=restricted: training log-probabilities
    # are then normalised over each step's columns too, as the rollouts were
    restricted: PrefixIndex | None = None

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        out = super()._generate_and_score_completions(inputs)
        if self.drop_zero_variance:
            adv = out["advantages"].view(-1, self.num_generations)
            keep = (adv.abs() > 1e-6).any(1).repeat_interleave(self.num_generations)
            out["completion_mask"] = out["completion_mask"] * keep[:, None].int()
            out["num_items_in_batch"] = self.accelerator.gather(out["completion_mask"].sum()).sum()
            mode = "train" if self.model.training else "eval"
            kept = self.accelerator.gather(keep.float().mean()).mean().item()
            self._metrics[mode]["dynamic_sampling/kept_share"].append(kept)
        return out

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
            logits = logits[:, :-1].float() / self.temperature
            completion = ids[:, -logits_to_keep:]
            if self.restricted is not None:
                logp, entropy = restricted_log_probs(self.restricted, logits, completion)
                logps.append(logp)
                entropies.append(entropy)
                continue
            logp = logits.log_softmax(-1)
            logps.append(logp.gather(-1, completion[:, :, None]).squeeze(-1))
            if compute_entropy:
                entropies.append(-(logp.exp() * logp).sum(-1))
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None


def reward_functions(
    weights: dict[str, float],
    num_generations: int,
    vectors: np.ndarray | None,
    sasrec: tuple[SASRec, int, np.ndarray] | None = None,
) -> list[Any]:
    """One TRL reward function per weighted reward (named after it, for the logs), each
    scoring completions by their group's beams against the row's own target (a SID index);
    ``sasrec`` = (model, history length, the item each SID index stands for)."""
    g = num_generations

    def make(name: str) -> Any:
        def reward(
            prompts: list[str],
            completions: list[str],
            beam_rank: list[int],
            beam_sid: list[int],
            target: list[int],
            history: list[list[int]],
            **_: Any,
        ) -> list[float]:
            n = len(beam_sid) // g
            beams = np.empty((n, g), dtype=np.int64)
            rank = np.asarray(beam_rank).reshape(n, g)
            np.put_along_axis(beams, rank, np.asarray(beam_sid).reshape(n, g), axis=1)
            goal = np.asarray(target).reshape(n, g)[:, 0]
            scores = None
            if name in NEEDS_SASREC and sasrec is not None:
                model, max_len, item_of_sid = sasrec
                scores = score_items(model, history[::g], item_of_sid[beams], max_len)
            r = combined({name: 1.0}, beams, goal, vectors, scores)[name]
            return np.take_along_axis(r, rank, axis=1).reshape(-1).tolist()

        reward.__name__ = name
        return reward

    return [make(name) for name, w in weights.items() if w]


def _check(cfg: dict[str, Any], embeddings: Path | None, sasrec: Path | None) -> None:
    """Reject settings that cannot train, before anything is loaded."""
    r = cfg["rl"]
    if r["algo"] not in ALGOS:
        raise SidrecError(f"rl.algo must be one of {ALGOS}, got {r['algo']!r}")
    if not 0 <= r["warmup_ratio"] < 1:
        raise SidrecError(f"rl.warmup_ratio must be in [0, 1), got {r['warmup_ratio']}")
    if r["eval_steps"] > 0 and r["save_steps"] % r["eval_steps"]:
        raise SidrecError(
            f"rl.save_steps={r['save_steps']} must be a multiple of rl.eval_steps="
            f"{r['eval_steps']} (the best checkpoint is chosen at evaluations)"
        )
    if r["algo"] == "dpo":
        if r["dpo"]["rejected"] < 1:
            raise SidrecError(f"rl.dpo.rejected must be >= 1, got {r['dpo']['rejected']}")
        return
    g = r["num_generations"]
    check_rewards(r["rewards"], embeddings is not None, sasrec is not None)
    titles = [t for t in TITLE_TASKS if r["tasks"].get(t, 0) > 0]
    if r["rewards"]["sasrec"] and titles:
        raise SidrecError(
            f"rl.rewards.sasrec scores item histories, which the title tasks {titles} do not "
            "have: use it with rl.tasks.sid_history only"
        )
    if g < 2 or r["per_device_batch_size"] % g:
        raise SidrecError(
            f"rl.num_generations={g} must be >= 2 and divide rl.per_device_batch_size="
            f"{r['per_device_batch_size']} (a device batch holds whole groups)"
        )
    if r["rollout"] not in ROLLOUTS:
        raise SidrecError(f"rl.rollout must be one of {ROLLOUTS}, got {r['rollout']!r}")
    if r["rollout"] == "sample" and r["temperature"] <= 0:
        raise SidrecError(f"rl.temperature must be > 0, got {r['temperature']}")
    if r["sync_ref_model"] and r["beta"] == 0:
        raise SidrecError("rl.sync_ref_model needs a reference model: set rl.beta > 0")
    if r["force_target"]:
        raise SidrecError("rl.force_target needs a tree model; an LM's groups are its beams")


def _reward_inputs(
    r: dict[str, Any],
    embeddings: Path | None,
    sasrec: Path | None,
    n_items: int,
    catalog: Catalog,
    inputs: dict[str, str],
) -> tuple[np.ndarray | None, tuple[SASRec, int, np.ndarray] | None]:
    """What the semantic and SASRec rewards read: the item vectors of each SID [n_sids, D],
    and (SASRec, its history length, the item each SID stands for); None where unused. The
    inputs read are added to ``inputs``."""
    vectors = scorer = None
    if r["algo"] == "grpo" and embeddings is not None and r["rewards"]["semantic"]:
        emb = load_embeddings(embeddings)
        if emb.shape[0] != n_items:
            raise InputError(embeddings, f"has {emb.shape[0]} rows for {n_items} items")
        vectors = emb[catalog.representative]
        inputs["embeddings"] = str(embeddings)
    if r["algo"] == "grpo" and sasrec is not None and r["rewards"]["sasrec"]:
        sas, max_len = load_sasrec(sasrec, n_items)
        scorer = (sas, max_len, catalog.representative)
        inputs["sasrec"] = str(sasrec)
    return vectors, scorer


def _validation(
    ds: Dataset, table: SidTable, decoder: Decoder, spec: PromptSpec, cfg: dict[str, Any]
) -> tuple[HFDataset | None, RankingValidation | None]:
    """The validation prompts (``rl.valid_users`` of them) and the NDCG@10 callback that
    decodes them; (None, None) without evaluations (``rl.eval_steps`` 0)."""
    if cfg["rl"]["eval_steps"] <= 0:
        return None, None
    model, tok, index, head = decoder
    rows = query_rows(ds, "valid", cfg["rl"]["valid_users"], cfg["seed"])
    cols, _ = history_examples(
        rows["history"].to_list(),
        index.catalog.item_sid[rows["target"].to_numpy()].tolist(),
        table.sids,
        spec,
        tok,
        index.depth + 1,
    )
    valid = HFDataset.from_dict(cols)
    e = cfg["evaluate"]
    ranking = RankingValidation(
        index,
        [tok(p, add_special_tokens=False)["input_ids"] for p in valid["prompt"]],
        np.asarray(valid["target"]),
        e["num_beams"],
        tok.pad_token_id,
        e["batch_size"],
        head,
        e["auto_batch_seconds"],
    )
    return valid, ranking


def _training_args(
    cfg: dict[str, Any], work: Path, device: torch.device, bf16: bool, has_valid: bool
) -> dict[str, Any]:
    """The arguments GRPO and DPO share (TRL's configs), from ``rl.*``."""
    r = cfg["rl"]
    return {
        "output_dir": str(work / CHECKPOINTS),
        "learning_rate": r["learning_rate"],
        "lr_scheduler_type": r["lr_scheduler"],
        "warmup_steps": r["warmup_ratio"],  # below 1: a fraction of the steps
        "max_grad_norm": r["max_grad_norm"],
        "num_train_epochs": r["epochs"],
        "max_steps": r["max_steps"],
        "per_device_train_batch_size": r["per_device_batch_size"],
        "per_device_eval_batch_size": r["per_device_batch_size"],
        "eval_strategy": "steps" if has_valid else "no",
        "eval_steps": r["eval_steps"] if has_valid else None,
        "load_best_model_at_end": has_valid,
        "metric_for_best_model": "eval_ndcg@10" if has_valid else None,
        "greater_is_better": True if has_valid else None,
        "gradient_accumulation_steps": r["gradient_accumulation_steps"],
        "logging_steps": r["logging_steps"],
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": r["save_steps"],
        "save_total_limit": r["save_total_limit"],
        "bf16": bf16,
        "use_cpu": device.type == "cpu",
        "report_to": "none",
        "seed": cfg["seed"],
        "data_seed": cfg["seed"],
        "sync_ref_model": r["sync_ref_model"],
        "ref_model_sync_steps": r["ref_model_sync_steps"],
    }


def _grpo_trainer(
    decoder: Decoder,
    train: HFDataset,
    valid: HFDataset | None,
    common: dict[str, Any],
    callbacks: list[Any],
    cfg: dict[str, Any],
    rewards: tuple[np.ndarray | None, tuple[SASRec, int, np.ndarray] | None],
) -> tuple[SidGRPOTrainer, Rollout]:
    """TRL's GRPO trainer with constrained rollouts (groups of ``rl.num_generations``) and
    the weighted rewards; ``rewards`` = what the semantic and SASRec rewards read."""
    r = cfg["rl"]
    model, tok, index, head = decoder
    g = r["num_generations"]
    rollout = Rollout(index, tok, g, r["rollout"], r["temperature"], cfg["seed"], head)
    reward_funcs = reward_functions(r["rewards"], g, *rewards)
    args = GRPOConfig(
        **common,
        num_generations=g,
        max_completion_length=index.depth + 1,
        temperature=r["temperature"] if r["rollout"] == "sample" else 1.0,
        beta=r["beta"],
        loss_type=r["loss_type"],
        reward_weights=[r["rewards"][f.__name__] for f in reward_funcs],
    )
    # the evaluation that triggers RankingValidation (on every valid_users prompt) also
    # makes TRL roll out and score its eval set: one device batch of prompts is enough
    trainer = SidGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=train,
        eval_dataset=valid.select(range(min(len(valid), r["per_device_batch_size"] // g)))
        if valid is not None
        else None,
        processing_class=tok,
        callbacks=callbacks,
        rollout_func=rollout,
    )
    trainer.drop_zero_variance = r["drop_zero_variance"]
    trainer.restricted = index if head == "restricted" else None
    return trainer, rollout


def _outcome(trainer: Any, rollout: Rollout | None) -> dict[str, Any]:
    """What the manifest records of a finished run's log: rewards, validation NDCG@10, the
    best checkpoint, rollout time."""
    history = trainer.state.log_history
    rewards = [h["reward"] for h in history if "reward" in h]
    ndcg = [h["eval_ndcg@10"] for h in history if "eval_ndcg@10" in h]
    best = trainer.state.best_model_checkpoint
    return {
        "rollout_seconds": round(rollout.seconds, 3) if rollout else None,
        "reward_first": rewards[0] if rewards else None,
        "reward_last": rewards[-1] if rewards else None,
        "valid_ndcg10_first": ndcg[0] if ndcg else None,
        "valid_ndcg10_best": trainer.state.best_metric,
        "best_checkpoint": Path(best).name if best else None,
    }


def _wants_titles(r: dict[str, Any]) -> bool:
    """Whether ``rl.tasks`` weights a title task (read from the SFT examples)."""
    return any(r["tasks"].get(t, 0) > 0 for t in TITLE_TASKS)


def _load(
    model_dir: Path, data: str | Path, cfg: dict[str, Any], device: torch.device
) -> tuple[Dataset, SidTable, Path, Decoder]:
    """The dataset, the model's SIDs (and their directory) and the model as a decoder; refuses
    a dataset of another catalog and groups larger than the catalog."""
    r = cfg["rl"]
    table, sid_dir = model_sids(model_dir)
    ds, _ = read_dataset(data)
    if ds.items.height != len(table.codes):
        raise InputError(data, f"has {ds.items.height} items, the model's SIDs {len(table.codes)}")
    decoder = load_decoder(model_dir, table, device, cfg["decoding"]["head"])
    n_sids = len(decoder.index.catalog.codes)
    grpo = r["algo"] == "grpo"
    g = r["num_generations"] if grpo else r["dpo"]["rejected"] + 1
    if g > n_sids:
        what = "rl.num_generations" if grpo else "rl.dpo.rejected + 1"
        raise SidrecError(f"{what}={g} exceeds the catalog's {n_sids} distinct SIDs")
    return ds, table, sid_dir, decoder


def _lm_model(model_dir: str | Path) -> Path:
    """``model_dir``, refused when it holds a tree model (RL trains LMs)."""
    if is_tree_model(model_dir):
        raise InputError(
            model_dir, "is a tree model; GRPO and DPO train LM models (model.family lm)"
        )
    return Path(model_dir)


def train_rl(
    model_dir: str | Path,
    data: str | Path,
    out: str | Path,
    cfg: dict[str, Any],
    embeddings: str | Path | None = None,
    examples: str | Path | None = None,
    sasrec: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """GRPO (or DPO, ``rl.algo``) from the model in ``model_dir`` on ``data``'s training rows
    (and ``examples``' title tasks); write a model directory into ``out`` (checkpoints in
    ``<out>.partial/`` until done). Returns the manifest (an empty dict on processes other than
    the main one)."""
    model_dir, out = _lm_model(model_dir), Path(out)
    embeddings = Path(embeddings) if embeddings is not None else None
    sasrec = Path(sasrec) if sasrec is not None else None
    r = cfg["rl"]
    _check(cfg, embeddings, sasrec)
    grpo = r["algo"] == "grpo"
    spec = PromptSpec.load(model_dir)
    state = PartialState(cpu=not torch.cuda.is_available())
    bf16 = use_bf16(r["bf16"])
    ds, table, sid_dir, decoder = _load(model_dir, data, cfg, state.device)
    model, tok, index, _ = decoder
    inputs = {"model": str(model_dir), "data": str(data)}
    rewards = _reward_inputs(r, embeddings, sasrec, ds.items.height, index.catalog, inputs)
    titles = Path(examples) if examples is not None and _wants_titles(r) else None
    if titles is not None:
        inputs["examples"] = str(titles)
    train, counts = training_rows(
        ds, titles, table, index.catalog.item_sid, spec, tok, index.depth + 1, cfg
    )
    valid, ranking = _validation(ds, table, decoder, spec, cfg)
    run = Run("rl", cfg, inputs, cfg["seed"])
    with ExitStack() as stack:
        settings = {k: cfg[k] for k in TRAINING_SECTIONS}
        work = claim_output(stack, state, out, run, settings, resume, overwrite)
        last = last_checkpoint(work) if resume else None
        common = _training_args(cfg, work, state.device, bf16, ranking is not None)
        callbacks = swanlab_callbacks(cfg, "rl") + ([ranking] if ranking else [])
        rollout = None
        if grpo:
            trainer, rollout = _grpo_trainer(decoder, train, valid, common, callbacks, cfg, rewards)
        else:
            from sidrec.rl.dpo import dpo_trainer

            trainer = dpo_trainer(
                model, tok, index, train, valid, work, state, common, callbacks, cfg, spec
            )
            counts["dpo_pairs"] = len(trainer.train_dataset)
        if ranking is not None:
            ranking.trainer = trainer
        train_loss, train_seconds = train_or_finish(trainer, last)
        if not trainer.is_world_process_zero():
            return {}
        counts |= {"train_examples": len(train), "steps": trainer.state.global_step}
        counts["epochs"] = trainer.state.epoch
        history = trainer.state.log_history
        with publish_model(out, work, trainer.model, tok, spec, history, swanlab_on(cfg)) as tmp:
            digest = bundle(tmp, sid_dir, model_items(model_dir))
            if not grpo:
                from sidrec.rl.dpo import PAIRS_DIR

                shutil.copytree(work / PAIRS_DIR, tmp / PAIRS_DIR)
            return run.finish(
                tmp,
                counts,
                algo=r["algo"],
                base_model=str(model_dir),
                sid_hash=digest,
                resumed_from=Path(last).name if last else None,
                train_loss=train_loss,
                train_seconds=train_seconds,
                **_outcome(trainer, rollout),
                processes=state.num_processes,
                bf16=bf16,
            )
