#!/usr/bin/env bash
# Stepwise RL on N processes (MiniOneRec's rl.sh): an SFT model -> GRPO (or --algo dpo) model.
# Usage: bash scripts/rl.sh [CONFIG] [--model DIR --data DIR --out DIR | --resume | key=value ...]
#   MiniOneRec's flags work too: --model_path DIR --train_batch_size N --num_train_epochs N
#   --sample_train True|False --sample_size N --reward_type rule|ranking|ranking_only|semantic|
#   sasrec --num_generations G --learning_rate LR --beta B --temperature T --beam_search
#   True|False --dynamic_sampling True|False --sync_ref_model True|False --output_dir DIR
#   --category NAME (the run name: outputs/NAME/...) --seed N
#   NPROC          processes (default: the GPU count, or 1)
#   LAUNCHER       accelerate (default; DDP or DeepSpeed from ACCEL_CONFIG) | torchrun (plain
#                  DDP; also runs on CPU, over gloo)
#   ACCEL_CONFIG   configs/accelerate/zero2.yaml (default, DeepSpeed ZeRO-2) | configs/accelerate/ddp.yaml
# Each process rolls out its own prompts (rl.per_device_batch_size completions, whole groups of
# rl.num_generations beams); rewards and advantages are computed over every process's groups.
source "$(dirname "$0")/_flags.sh"
translate rl "$@"
exec bash "$(dirname "$0")/_launch.sh" rl configs/accelerate/zero2.yaml "$CONFIG" "${SIDREC_ARGS[@]}"
