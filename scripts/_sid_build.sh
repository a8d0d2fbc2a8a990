#!/usr/bin/env bash
# Shared by rqkmeans_faiss.sh, rqkmeans_constrained.sh, rqkmeans_plus.sh and rqvae.sh
# (sourced after METHOD is set): embeddings -> unique SIDs, then the quality report.
source "$(dirname "$0")/_common.sh"
DATASET=Industrial_and_Scientific
ROOT=""
ARGS=()
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dataset) DATASET=$(value "$@"); shift 2 ;;
    --root) ROOT=$(value "$@"); shift 2 ;;
    --levels|--seed|--dedup|--config) ARGS+=("$1" "$(value "$@")"); shift 2 ;;
    --codebook_size|--num_emb) ARGS+=(--codebook-size "$(value "$@")"); shift 2 ;;
    --overwrite) ARGS+=(--overwrite); shift ;;
    *) unknown "$1" ;;
  esac
done
ROOT=${ROOT:-outputs/$DATASET}
run "$SIDREC" sid build --emb "$ROOT/embeddings" --method "$METHOD" --out "$ROOT/sid" "${ARGS[@]}"
run "$SIDREC" sid report --sid "$ROOT/sid"
