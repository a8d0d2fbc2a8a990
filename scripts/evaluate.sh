#!/usr/bin/env bash
# Stepwise evaluation on N processes (MiniOneRec's evaluate.sh): constrained beam search over
# the catalog's SIDs, HR@K / NDCG@K, results.json + predictions.parquet.
# Usage: bash scripts/evaluate.sh [CONFIG] [--model DIR --data DIR --sid DIR --out DIR ...]
#   NPROC          processes, each decoding a shard of the users (default: the GPU count, or 1)
#   LAUNCHER       accelerate (default, configs/accelerate/ddp.yaml) | torchrun (also on CPU)
exec bash "$(dirname "$0")/_launch.sh" evaluate configs/accelerate/ddp.yaml "$@"
