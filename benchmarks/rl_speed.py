"""Where a GRPO step's time goes: rollout, reward and update, with our beam-search rollout and
with ``generate`` + :class:`sidrec.core.decoding.SidConstraint` as the rollout, in the same run.

Runs ``sidrec rl`` for a few steps from the demo's LM SFT model (``configs/demo.yaml`` with
``model.family=lm``, run ``demo-lm``; built with
``sidrec pipeline --until sft`` when missing) with G = 16 beams per prompt, once per rollout,
and splits each step: rollout (the ``rollout_func``), reward (the reward functions) and update
(everything else: log-probabilities of policy and reference model, loss, backward, optimizer
step). Prints one JSON object with the times, the rollout's share of a step and the speed-up
of our rollout over ``generate``'s.

    python benchmarks/rl_speed.py [--steps 3] [--prompts 4] [--out FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from sidrec.app.pipeline import run_pipeline
from sidrec.core.config import load_config, stage_path
from sidrec.core.decoding import SidConstraint, beam_config, left_pad
from sidrec.core.io import is_complete
from sidrec.core.manifest import git_commit, machine, print_report
from sidrec.rl import train as rl_train

REPO = Path(__file__).resolve().parents[1]
G = 16
GOAL = 4.0


def generate_decode(
    self: rl_train.Rollout, model: Any, ids: list[list[int]], step: int, process: int
) -> torch.Tensor:
    """The same group through transformers' ``generate``: beam search with every beam
    returned, length penalty 0 and our constraint processor; (B, G) SIDs, best first."""
    batch = left_pad(ids, self.tok.pad_token_id, model.device)
    width = batch["input_ids"].shape[1]
    eos, pad = self.tok.eos_token_id, self.tok.pad_token_id
    with torch.inference_mode():
        out = model.generate(
            **batch,
            generation_config=beam_config(self.g, self.index.depth + 1, eos, pad),
            logits_processor=[SidConstraint(self.index, width)],
        )
    sids = self.index.sids_of(out.sequences[:, width:]).view(len(ids), self.g)
    order = out.sequences_scores.view(len(ids), self.g).argsort(1, descending=True)
    return sids.gather(1, order)


def timed_rewards(clock: dict[str, float]) -> Any:
    """``reward_functions`` whose functions add their time to ``clock["reward"]``."""
    real = rl_train.reward_functions

    def make(*args: Any, **kwargs: Any) -> list[Any]:
        def wrap(fn: Any) -> Any:
            def reward(*a: Any, **k: Any) -> list[float]:
                started = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    clock["reward"] += time.perf_counter() - started

            reward.__name__ = fn.__name__
            return reward

        return [wrap(f) for f in real(*args, **kwargs)]

    return make


def one_run(cfg: dict[str, Any], model: Path, data: Path, rollout: str) -> dict[str, float]:
    """Train ``rl.max_steps`` steps with the ``beam`` (ours) or ``generate`` rollout; the
    seconds per step of each part."""
    clock = {"reward": 0.0}
    real_decode, real_rewards = rl_train.Rollout.decode, rl_train.reward_functions
    if rollout == "generate":
        rl_train.Rollout.decode = generate_decode
    rl_train.reward_functions = timed_rewards(clock)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = rl_train.train_rl(model, data, Path(tmp) / "rl", cfg)
    finally:
        rl_train.Rollout.decode, rl_train.reward_functions = real_decode, real_rewards
    steps = manifest["counts"]["steps"]
    total, roll = manifest["train_seconds"], manifest["rollout_seconds"]
    return {
        "step_seconds": round(total / steps, 3),
        "rollout_seconds": round(roll / steps, 3),
        "reward_seconds": round(clock["reward"] / steps, 4),
        "update_seconds": round((total - roll - clock["reward"]) / steps, 3),
        "rollout_share_of_step": round(roll / total, 3),
    }


# GRPO trains the demo's LM recipe (the profile ships the tree family), in its own run
LM = ["model.family=lm", "rl.enabled=true", "run_name=demo-lm"]


def run(steps: int, prompts: int, overrides: list[str]) -> dict[str, Any]:
    """Both rollouts on the same model, data and settings; the JSON-ready result."""
    overrides = [*LM, *overrides]
    cfg = load_config(REPO / "configs" / "demo.yaml", overrides)
    model, data = stage_path(cfg, "sft"), stage_path(cfg, "data")
    if not is_complete(model):
        run_pipeline(cfg, log=lambda m: print(m, file=sys.stderr), until="sft")
    rl = [
        f"rl.num_generations={G}",
        f"rl.per_device_batch_size={G * prompts}",
        f"rl.max_steps={steps}",
        f"rl.sample_size={steps * prompts}",
        "rl.eval_steps=0",
        f"rl.save_steps={steps}",
        "swanlab.mode=disabled",
    ]
    cfg = load_config(REPO / "configs" / "demo.yaml", [*overrides, *rl])
    ours = one_run(cfg, model, data, "beam")
    hf = one_run(cfg, model, data, "generate")
    speedup = hf["rollout_seconds"] / ours["rollout_seconds"]
    return {
        "benchmark": "rl_speed",
        "settings": {
            "model": str(model),
            "base_model": cfg["model"]["name_or_path"],
            "num_generations": G,
            "prompts_per_step": prompts,
            "steps": steps,
            "beta": cfg["rl"]["beta"],
        },
        "ours_beam_search": ours,
        "generate_sid_constraint": hf,
        "rollout_speedup": round(speedup, 2),
        "goal": {"rollout_speedup_at_least": GOAL, "met": speedup >= GOAL},
        "machine": machine(),
        "sidrec_commit": git_commit(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3, help="GRPO steps per rollout kind")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step (x 16 beams)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    a = p.parse_args(argv)
    print_report(run(a.steps, a.prompts, a.overrides), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
