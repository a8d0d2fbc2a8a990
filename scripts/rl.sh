#!/usr/bin/env bash
# Stepwise RL on N processes (MiniOneRec's rl.sh): an SFT model -> GRPO (or --algo dpo) model.
# Usage: bash scripts/rl.sh [CONFIG] [--model DIR --data DIR --out DIR | --resume | key=value ...]
#   NPROC          processes (default: the GPU count, or 1)
#   LAUNCHER       accelerate (default; DDP or DeepSpeed from ACCEL_CONFIG) | torchrun (plain
#                  DDP; also runs on CPU, over gloo)
#   ACCEL_CONFIG   configs/accelerate/zero2.yaml (default, DeepSpeed ZeRO-2) | configs/accelerate/ddp.yaml
# Each process rolls out its own prompts (rl.per_device_batch_size completions, whole groups of
# rl.num_generations beams); rewards and advantages are computed over every process's groups.
exec bash "$(dirname "$0")/_launch.sh" rl configs/accelerate/zero2.yaml "$@"
