#!/usr/bin/env bash
# Shared by rqkmeans_faiss.sh, rqkmeans_constrained.sh, rqkmeans_plus.sh and rqvae.sh
# (sourced after METHOD is set): embeddings -> unique SIDs, then the quality report.
source "$(dirname "$0")/_common.sh"
while (( $# )); do
  case "$1" in
    --levels|--seed|--dedup) ARGS+=("$1" "$(value "$@")"); shift 2 ;;
    --codebook_size|--num_emb) ARGS+=(--codebook-size "$(value "$@")"); shift 2 ;;
    *) common_flag "$@"; shift "$CONSUMED" ;;
  esac
done
ROOT=${ROOT:-outputs/$DATASET}
run "$SIDREC" sid build --emb "$ROOT/embeddings" --method "$METHOD" --out "$ROOT/sid" "${ARGS[@]}"
run "$SIDREC" sid report --sid "$ROOT/sid"
