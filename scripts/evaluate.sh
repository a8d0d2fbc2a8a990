#!/usr/bin/env bash
# Stepwise evaluation on N processes (MiniOneRec's evaluate.sh): constrained beam search over
# the catalog's SIDs, HR@K / NDCG@K, results.json + predictions.parquet.
# Usage: bash scripts/evaluate.sh [CONFIG] [--model DIR --data DIR --sid DIR --out DIR ...]
#   NPROC          processes, each decoding a shard of the users (default: the GPU count, or 1)
#   LAUNCHER       accelerate (default, configs/accelerate/ddp.yaml) | torchrun (also on CPU)
set -euo pipefail
CONFIG=${1:-configs/qwen2.5-0.5b.yaml}
shift $(( $# < 1 ? $# : 1 ))
if [[ -z "${NPROC:-}" ]]; then
  NPROC=$(nvidia-smi -L 2>/dev/null | wc -l || true)
  (( NPROC > 0 )) || NPROC=1
fi
case "${LAUNCHER:-accelerate}" in
  accelerate)
    exec accelerate launch --config_file configs/accelerate/ddp.yaml \
      --num_processes "$NPROC" -m sidrec.cli evaluate --config "$CONFIG" "$@" ;;
  torchrun)
    exec torchrun --standalone --nproc_per_node "$NPROC" -m sidrec.cli evaluate --config "$CONFIG" "$@" ;;
  *) echo "LAUNCHER must be accelerate or torchrun, got ${LAUNCHER}" >&2; exit 2 ;;
esac
