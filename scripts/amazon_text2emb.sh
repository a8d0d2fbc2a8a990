#!/usr/bin/env bash
# Item text -> embeddings (MiniOneRec's amazon_text2emb.sh), with a sentence-transformers model.
# Usage: bash scripts/amazon_text2emb.sh [--dataset NAME] [--root DIR] [--plm_checkpoint MODEL]
#          [--config PROFILE] [--from_npy FILE] [--overwrite]
#   --root            the run directory: reads ROOT/data, writes ROOT/embeddings
#                     (default outputs/NAME)
#   --plm_checkpoint  a hub name or local path; all-minilm-l6-v2 is offline (default: the
#                     profile's embed.model, else BAAI/bge-small-en-v1.5)
#   --from_npy        a precomputed [N, D] .npy (e.g. MiniOneRec's Qwen3-Embedding) instead
source "$(dirname "$0")/_common.sh"
while (( $# )); do
  case "$1" in
    --plm_checkpoint) ARGS+=(--model "$(value "$@")"); shift 2 ;;
    --from_npy) ARGS+=(--from-npy "$(value "$@")"); shift 2 ;;
    *) common_flag "$@"; shift "$CONSUMED" ;;
  esac
done
ROOT=${ROOT:-outputs/$DATASET}
run "$SIDREC" embed --data "$ROOT/data" --out "$ROOT/embeddings" "${ARGS[@]}"
