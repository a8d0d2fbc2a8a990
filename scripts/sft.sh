#!/usr/bin/env bash
# Stepwise SFT on N processes (MiniOneRec's sft.sh): examples -> fine-tuned model.
# Usage: bash scripts/sft.sh [CONFIG] [key=value | --resume | --out DIR ...]
#   MiniOneRec's flags work too: --base_model NAME --batch_size N --micro_batch_size N
#   --learning_rate LR --num_epochs N --cutoff_len N --freeze_LLM True|False --output_dir DIR
#   --category NAME (the run name: outputs/NAME/...) --seed N
#   NPROC          processes (default: the GPU count, or 1)
#   LAUNCHER       accelerate (default; DDP or DeepSpeed from ACCEL_CONFIG) | torchrun (plain
#                  DDP; also runs on CPU, over gloo)
#   ACCEL_CONFIG   configs/accelerate/zero2.yaml (default, DeepSpeed ZeRO-2) | configs/accelerate/ddp.yaml
# The global batch (sft.global_batch_size) stays the same for any NPROC: gradient accumulation
# makes up the difference, and a batch that does not divide is rejected before training.
source "$(dirname "$0")/_flags.sh"
translate sft "$@"
exec bash "$(dirname "$0")/_launch.sh" sft configs/accelerate/zero2.yaml "$CONFIG" "${SIDREC_ARGS[@]}"
