#!/usr/bin/env bash
# Stepwise SFT on N processes (MiniOneRec's sft.sh): examples -> fine-tuned model.
# Usage: bash scripts/sft.sh [CONFIG] [key=value | --resume | --out DIR ...]
#   NPROC          processes (default: the GPU count, or 1)
#   LAUNCHER       accelerate (default; DDP or DeepSpeed from ACCEL_CONFIG) | torchrun (plain
#                  DDP; also runs on CPU, over gloo)
#   ACCEL_CONFIG   configs/accelerate/zero2.yaml (default, DeepSpeed ZeRO-2) | configs/accelerate/ddp.yaml
# The global batch (sft.global_batch_size) stays the same for any NPROC: gradient accumulation
# makes up the difference, and a batch that does not divide is rejected before training.
set -euo pipefail
CONFIG=${1:-configs/qwen2.5-0.5b.yaml}
shift $(( $# < 1 ? $# : 1 ))
if [[ -z "${NPROC:-}" ]]; then
  NPROC=$(nvidia-smi -L 2>/dev/null | wc -l || true)
  (( NPROC > 0 )) || NPROC=1
fi
case "${LAUNCHER:-accelerate}" in
  accelerate)
    exec accelerate launch --config_file "${ACCEL_CONFIG:-configs/accelerate/zero2.yaml}" \
      --num_processes "$NPROC" -m sidrec.cli sft --config "$CONFIG" "$@" ;;
  torchrun)
    exec torchrun --standalone --nproc_per_node "$NPROC" -m sidrec.cli sft --config "$CONFIG" "$@" ;;
  *) echo "LAUNCHER must be accelerate or torchrun, got ${LAUNCHER}" >&2; exit 2 ;;
esac
