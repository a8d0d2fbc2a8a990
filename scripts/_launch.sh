#!/usr/bin/env bash
# Shared by sft.sh, rl.sh and evaluate.sh: run `sidrec COMMAND --config CONFIG ...` on NPROC
# processes. Usage: bash scripts/_launch.sh COMMAND DEFAULT_ACCEL_CONFIG [CONFIG] [args ...]
#   NPROC          processes (default: the GPU count, or 1)
#   LAUNCHER       accelerate (default; DDP or DeepSpeed from ACCEL_CONFIG) | torchrun (plain
#                  DDP; also runs on CPU, over gloo)
#   ACCEL_CONFIG   overrides the command's accelerate config
set -euo pipefail
COMMAND=$1
DEFAULT_ACCEL=$2
shift 2
CONFIG=${1:-configs/qwen2.5-0.5b.yaml}
shift $(( $# < 1 ? $# : 1 ))
if [[ -z "${NPROC:-}" ]]; then
  NPROC=$(nvidia-smi -L 2>/dev/null | wc -l || true)
  (( NPROC > 0 )) || NPROC=1
fi
case "${LAUNCHER:-accelerate}" in
  accelerate)
    echo "+ accelerate launch --num_processes $NPROC -m sidrec.app.cli $COMMAND --config $CONFIG $*" >&2
    exec accelerate launch --config_file "${ACCEL_CONFIG:-$DEFAULT_ACCEL}" \
      --num_processes "$NPROC" -m sidrec.app.cli "$COMMAND" --config "$CONFIG" "$@" ;;
  torchrun)
    echo "+ torchrun --nproc_per_node $NPROC -m sidrec.app.cli $COMMAND --config $CONFIG $*" >&2
    exec torchrun --standalone --nproc_per_node "$NPROC" -m sidrec.app.cli "$COMMAND" --config "$CONFIG" "$@" ;;
  *) echo "LAUNCHER must be accelerate or torchrun, got ${LAUNCHER}" >&2; exit 2 ;;
esac
