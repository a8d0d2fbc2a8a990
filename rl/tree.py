"""``sidrec rl`` for a ``tree`` model (:mod:`sidrec.core.tree_model`): group policy optimisation
over the model's exact distribution over the catalog.

For each training row the model scores every item exactly (log p(item) = the sum of its SID's
codes' log-probabilities). The group is G distinct items: the top G (``rl.rollout=beam``, what
beam search would return) or G drawn without replacement from p at ``rl.temperature``
(``sample``: Gumbel top-k). With ``rl.force_target`` a group that misses the row's target gets
it in place of its last member. Each member is rewarded by :mod:`sidrec.rl.rewards` (in the
order of the model's scores, best first, as beams are), the advantage is its reward less the
group's mean over the group's standard deviation (GRPO), and the loss is

    -mean(advantage x log p(item)) + rl.beta x KL(p || p_ref)

with the KL to the starting model computed exactly over the catalog. One update per group, so
the policy ratio is 1 and GRPO's clipping is moot; dropout is off, as in TRL. Validation
NDCG@10 (``rl.valid_users``, before the first step and every ``rl.eval_steps``) picks the
weights that are kept, so the output is never worse than the start on validation (with
``rl.eval_steps`` 0 the last weights are kept). A checkpoint every ``rl.save_steps`` makes an
interrupted run continue with ``--resume`` where it stopped.
"""

from __future__ import annotations

import math
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from transformers import get_scheduler

from sidrec.core.dataset import Dataset, read_dataset
from sidrec.core.errors import InputError, SidrecError
from sidrec.core.io import atomic_dir, read_json, write_json
from sidrec.core.manifest import Run
from sidrec.core.metrics import hr_ndcg, target_ranks
from sidrec.core.model_dir import bundle, model_items, model_sids
from sidrec.core.sasrec_model import SASRec, load_sasrec, pad_left
from sidrec.core.sequences import query_rows
from sidrec.core.training import (
    TRAIN_LOG,
    Weights,
    claim_output,
    last_checkpoint,
    restore_loop_checkpoint,
    save_loop_checkpoint,
    swanlab_run,
)
from sidrec.core.tree_model import TREE_CONFIG, TREE_FILE, TreeSID, load_tree, rank_tree
from sidrec.rl.rewards import check_rewards, combined

VALID_K = 10
SELECT = f"NDCG@{VALID_K}"
# the rl settings a tree run is made with (recorded; a changed one restarts the run)
SECTIONS = ("seed", "rl", "evaluate")


def _check(cfg: dict[str, Any], sasrec: Path | None) -> None:
    """Refuse settings the tree family has no use for, in one line."""
    r = cfg["rl"]
    bad = []
    if r["algo"] != "grpo":
        bad.append("rl.algo grpo (DPO trains LM models)")
    if any(w > 0 for t, w in r["tasks"].items() if t != "sid_history"):
        bad.append("rl.tasks: sid_history only (title prompts need an LM)")
    if r["rewards"].get("semantic"):
        bad.append("rl.rewards.semantic 0 (an LM reward)")
    if r["rollout"] not in ("beam", "sample") or r["temperature"] <= 0:
        bad.append("rl.rollout beam or sample, rl.temperature > 0")
    g = r["num_generations"]
    if g < 2 or r["per_device_batch_size"] % g or not 0 <= r["warmup_ratio"] < 1:
        bad.append(
            "rl.num_generations >= 2 dividing rl.per_device_batch_size (groups a step), "
            "rl.warmup_ratio in [0, 1)"
        )
    if r["save_steps"] < 1 or (r["eval_steps"] > 0 and r["save_steps"] % r["eval_steps"]):
        bad.append("rl.save_steps >= 1 and a multiple of rl.eval_steps")
    if bad:
        raise SidrecError(f"rl for a tree model needs {'; '.join(bad)}")
    check_rewards(r["rewards"], False, sasrec is not None)


def _rows(ds: Dataset, cfg: dict[str, Any]) -> tuple[list[list[int]], np.ndarray]:
    """The training rows RL rolls out on: all, or a seeded ``rl.sample_size`` of them."""
    rows = ds.train.filter(ds.train["history"].list.len() > 0)
    n = rows.height
    size = cfg["rl"]["sample_size"]
    if 0 < size < n:
        rows = rows[np.sort(np.random.default_rng(cfg["seed"]).choice(n, size, replace=False))]
    return rows["history"].to_list(), rows["target"].to_numpy()


def _order(n_rows: int, steps: int, batch: int, seed: int) -> np.ndarray:
    """The rows of every step (steps, batch): seeded shuffles of all rows, one after another."""
    rng = np.random.default_rng(seed)
    need = steps * batch
    epochs = [rng.permutation(n_rows) for _ in range(math.ceil(need / n_rows))]
    return np.concatenate(epochs)[:need].reshape(steps, batch)


def group_of(
    logp: torch.Tensor, target: torch.Tensor, r: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The group of each row: G item ids (N, G) ordered by ``logp`` (N, n_items), best first,
    and their log-probabilities (N, G) (differentiable); ``target`` (N,) the rows' targets
    (as their SIDs' representative items), put in with ``rl.force_target``."""
    g = r["num_generations"]
    key = logp.detach()
    if r["rollout"] == "sample":
        gumbel = -torch.log(-torch.log(torch.rand_like(key).clamp(1e-12, 1 - 1e-7)))
        key = key / r["temperature"] + gumbel
    items = key.topk(g, dim=1).indices
    if r["force_target"]:
        missing = ~(items == target[:, None]).any(1)
        items[missing, -1] = target[missing]
    chosen = logp.gather(1, items)
    order = chosen.detach().argsort(dim=1, descending=True)
    return items.gather(1, order), chosen.gather(1, order)


def _teacher_scores(
    teacher: SASRec | None, seq: torch.Tensor, items: torch.Tensor
) -> np.ndarray | None:
    """The SASRec's scores (N, G) of each group's items after the rows' histories."""
    if teacher is None:
        return None
    with torch.no_grad():
        scores = teacher.scores(teacher(seq)[:, -1])
    return scores.gather(1, items).float().cpu().numpy()


def representatives(model: TreeSID) -> torch.Tensor:
    """The item each distinct SID is shown as (n_sids,): the first item holding it."""
    items = torch.nonzero(model.representative).squeeze(1)
    out = torch.empty_like(items)
    out[model.sid_of_item[items]] = items
    return out


def _step_loss(
    policy: TreeSID,
    ref: TreeSID | None,
    teacher: SASRec | None,
    shown_as: torch.Tensor,
    seq: torch.Tensor,
    target: torch.Tensor,
    r: dict[str, Any],
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one batch of rows (left-padded item tokens ``seq`` (N, L), targets (N,))
    and what to log of it; ``shown_as`` is :func:`representatives`, ``r`` the rl settings."""
    logp = policy.item_scores(policy.encode(seq)[:, -1])  # (N, n_items)
    rep = shown_as[policy.sid_of_item[target]]
    items, chosen = group_of(logp, rep, r)
    sid = policy.sid_of_item
    found = combined(
        r["rewards"],
        sid[items].cpu().numpy(),
        sid[rep].cpu().numpy(),
        beam_scores=_teacher_scores(teacher, seq, items),
    )
    reward = torch.as_tensor(found["total"], dtype=logp.dtype, device=logp.device)
    std = reward.std(1, keepdim=True)
    advantage = (reward - reward.mean(1, keepdim=True)) / (std + 1e-4)
    per_group = -(advantage * chosen).mean(1)  # (N,); 0 where every reward is equal
    # dynamic sampling: the loss is the mean over the groups that teach something
    keep = std.squeeze(1) > 0 if r["drop_zero_variance"] else torch.ones_like(per_group, dtype=bool)
    loss = per_group[keep].mean() if bool(keep.any()) else per_group.sum() * 0.0
    kl = torch.zeros((), device=logp.device)
    if ref is not None:
        with torch.no_grad():
            logp_ref = ref.item_scores(ref.encode(seq)[:, -1])
        ok = torch.isfinite(logp)
        diff = torch.where(ok, logp - logp_ref, 0.0)
        kl = (logp.exp() * diff).sum(1).mean()
        loss = loss + r["beta"] * kl
    hit = (items == rep[:, None]).any(1).float().mean()
    shown = {"loss": float(loss.detach()), "kl": float(kl.detach()), "group_has_target": float(hit)}
    shown |= {"reward": float(reward.mean()), "zero_std": float((std == 0).float().mean())}
    return loss, shown


Progress = dict[str, Any]  # JSON: step, log, best, best_step, seconds


def _validate(model: TreeSID, valid: Any, cfg: dict[str, Any]) -> dict[str, float]:
    """HR@10 and NDCG@10 of ``model`` on the validation rows, the whole catalog scored."""
    e = cfg["evaluate"]
    top, _, _ = rank_tree(
        model, valid["history"].to_list(), VALID_K, e["batch_size"], e["exclude_history"]
    )
    return hr_ndcg(target_ranks(top, valid["target"].to_numpy()), [VALID_K])


def _record(progress: Progress, model: TreeSID, found: dict[str, float], best: Weights) -> Weights:
    """Log a validation at ``progress["step"]``; the best weights so far."""
    progress["log"].append({"step": progress["step"], **found})
    if found[SELECT] > progress["best"]:
        progress["best"], progress["best_step"] = found[SELECT], progress["step"]
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    return best


def _schedule(policy: TreeSID, r: dict[str, Any], steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW at ``rl.learning_rate`` and its ``rl.lr_scheduler`` over ``steps`` steps, the
    first ``rl.warmup_ratio`` of them warming up."""
    opt = torch.optim.AdamW(policy.parameters(), lr=r["learning_rate"], weight_decay=0.0)
    return opt, get_scheduler(r["lr_scheduler"], opt, int(r["warmup_ratio"] * steps), steps)


def _fit(
    models: tuple[TreeSID, TreeSID | None, SASRec | None],
    rows: tuple[list[list[int]], np.ndarray],
    valid: Any,
    cfg: dict[str, Any],
    work: Path,
    last: str | None,
) -> tuple[Progress, Weights]:
    """Train step by step from the ``last`` checkpoint or the start; returns the progress and
    the best weights by validation NDCG@10 (the start's included)."""
    policy, ref, teacher = models
    r = cfg["rl"]
    history, target = rows
    batch = min(r["per_device_batch_size"] // r["num_generations"], len(history))
    steps = r["max_steps"] if r["max_steps"] > 0 else math.ceil(r["epochs"] * len(history) / batch)
    order = _order(len(history), steps, batch, cfg["seed"])
    opt, schedule = _schedule(policy, r, steps)
    stateful = {"optimizer": opt, "scheduler": schedule}
    progress: Progress = {"step": 0, "log": [], "best": -1.0, "best_step": 0, "seconds": 0.0}
    best: Weights = {}
    validating = r["eval_steps"] > 0
    if last is not None:
        progress, best = restore_loop_checkpoint(last, TREE_FILE, policy, stateful)
    elif validating:
        best = _record(progress, policy, _validate(policy, valid, cfg), best)
    shown_as, device = representatives(policy), policy.item_codes.device
    dashboard = swanlab_run(cfg, "rl")
    while progress["step"] < steps:
        started = time.perf_counter()
        picked = order[progress["step"]]
        tokens = [[i + 1 for i in history[j]] for j in picked]
        seq = pad_left(tokens, policy.encoder.max_len).to(device)
        aim = torch.as_tensor(target[picked], device=device)
        loss, shown = _step_loss(policy, ref, teacher, shown_as, seq, aim, r)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), r["max_grad_norm"])
        opt.step()
        schedule.step()
        progress["step"] += 1
        progress["seconds"] += time.perf_counter() - started
        step, end = progress["step"], progress["step"] == steps
        if dashboard is not None and step % max(r["logging_steps"], 1) == 0:
            dashboard.log({f"train/{k}": v for k, v in shown.items()}, step=step)
        if validating and (step % r["eval_steps"] == 0 or end):
            found = _validate(policy, valid, cfg)
            best = _record(progress, policy, found, best)
            progress["log"][-1] |= shown
            if dashboard is not None:
                dashboard.log({f"valid/{k.lower()}": v for k, v in found.items()}, step=step)
        elif not validating and (step % r["logging_steps"] == 0 or end):
            progress["log"].append({"step": step, **shown})
        if step % r["save_steps"] == 0 or end:
            save_loop_checkpoint(work, step, TREE_FILE, policy, stateful, progress, best)
    if dashboard is not None:
        dashboard.finish()
    return progress, best if validating else policy.state_dict()


def _models(
    model_dir: Path, ds: Dataset, sasrec: Path | None, cfg: dict[str, Any], device: Any
) -> tuple[TreeSID, TreeSID | None, SASRec | None]:
    """The policy (trained without dropout), the frozen reference (None when ``rl.beta`` is
    0) and the SASRec of the ``sasrec`` reward (None when unused), on ``device``."""
    table, _ = model_sids(model_dir)
    if ds.items.height != len(table.codes):
        raise InputError(model_dir, f"holds {len(table.codes)} items, the data {ds.items.height}")
    policy = load_tree(model_dir, device=device)  # eval mode: no dropout in RL, as in TRL
    ref = load_tree(model_dir, device=device) if cfg["rl"]["beta"] > 0 else None
    teacher = None
    if sasrec is not None and cfg["rl"]["rewards"].get("sasrec"):
        teacher = load_sasrec(sasrec, ds.items.height)[0].to(device).eval()
    if cfg["rl"]["num_generations"] > int(policy.representative.sum()):
        raise SidrecError("rl.num_generations exceeds the catalog's distinct SIDs")
    return policy, ref, teacher


def train_tree_rl(
    model_dir: str | Path,
    data: str | Path,
    out: str | Path,
    cfg: dict[str, Any],
    sasrec: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """RL from the tree model in ``model_dir`` on ``data``'s training rows; write a tree model
    directory into ``out`` (checkpoints in ``<out>.partial/`` until done). Returns the
    manifest."""
    model_dir, data, out = Path(model_dir), Path(data), Path(out)
    sasrec = Path(sasrec) if sasrec is not None else None
    _check(cfg, sasrec)
    ds, _ = read_dataset(data)
    state = PartialState(cpu=not torch.cuda.is_available())
    torch.manual_seed(cfg["seed"])
    models = _models(model_dir, ds, sasrec, cfg, state.device)
    rows = _rows(ds, cfg)
    valid = query_rows(ds, "valid", cfg["rl"]["valid_users"], cfg["seed"])
    inputs = {"model": str(model_dir), "data": str(data)}
    if models[2] is not None:
        inputs["sasrec"] = str(sasrec)
    run = Run("rl", cfg, inputs, cfg["seed"])
    with ExitStack() as stack:
        settings = {k: cfg[k] for k in SECTIONS}
        work = claim_output(stack, state, out, run, settings, resume, overwrite)
        last = last_checkpoint(work) if resume else None
        progress, best = _fit(models, rows, valid, cfg, work, last)
        with atomic_dir(out, overwrite=True) as tmp:
            torch.save(best, tmp / TREE_FILE)
            write_json(tmp / TREE_CONFIG, read_json(model_dir / TREE_CONFIG))
            write_json(tmp / TRAIN_LOG, progress["log"])
            digest = bundle(tmp, model_sids(model_dir)[1], model_items(model_dir))
            manifest = run.finish(
                tmp,
                {
                    "train_rows": len(rows[0]),
                    "valid_users": valid.height,
                    "steps": progress["step"],
                },
                algo="grpo",
                family="tree",
                base_model=str(model_dir),
                sid_hash=digest,
                resumed_from=Path(last).name if last else None,
                best_step=progress["best_step"] if progress["best"] >= 0 else progress["step"],
                best_valid_ndcg10=progress["best"] if progress["best"] >= 0 else None,
                start_valid_ndcg10=progress["log"][0].get(SELECT),
                train_seconds=round(progress["seconds"], 1),
            )
        shutil.rmtree(work, ignore_errors=True)
    return manifest
