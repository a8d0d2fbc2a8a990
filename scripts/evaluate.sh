#!/usr/bin/env bash
# Stepwise evaluation on N processes (MiniOneRec's evaluate.sh): constrained beam search over
# the catalog's SIDs, HR@K / NDCG@K, results.json + predictions.parquet.
# Usage: bash scripts/evaluate.sh [CONFIG] [--model DIR --data DIR --sid DIR --out DIR ...]
#   MiniOneRec's flags work too: --base_model DIR --category NAME (the run name:
#   outputs/NAME/...) --num_beams K --batch_size N --output_dir DIR
#   NPROC          processes, each decoding a shard of the users (default: the GPU count, or 1)
#   LAUNCHER       accelerate (default, configs/accelerate/ddp.yaml) | torchrun (also on CPU)
source "$(dirname "$0")/_flags.sh"
translate evaluate "$@"
exec bash "$(dirname "$0")/_launch.sh" evaluate configs/accelerate/ddp.yaml "$CONFIG" "${SIDREC_ARGS[@]}"
