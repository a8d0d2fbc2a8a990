#!/usr/bin/env bash
# The bad-case report of an evaluation (MiniOneRec's analyze_badcase.sh): eval_results.jsonl,
# badcase_report.json, summary_report.txt, visualizations/*.png and report.html.
# Usage: bash scripts/analyze_badcase.sh [--category NAME] [--model DIR | --eval_dir DIR]
#          [--top_k 10] [--output_dir DIR] [--embeddings DIR] [--overwrite]
#   --category    the run name: outputs/NAME/... (default demo)
#   --model       the evaluated model: the run's evaluation of it is analysed (default: the
#                 run's last evaluation, evaluate_rl before evaluate)
#   --eval_dir    an evaluate (or sasrec) output, instead of --model
#   --output_dir  default outputs/NAME/analyze (where sidrec pipeline puts it)
#   --embeddings  default outputs/NAME/embeddings when it exists (adds the similarity and
#                 recency segments)
source "$(dirname "$0")/_common.sh"
CATEGORY=demo
MODEL=""
EVAL=""
OUT=""
EMB=""
ARGS=()
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --category) CATEGORY=$(value "$@"); shift 2 ;;
    --model) MODEL=$(value "$@"); shift 2 ;;
    --eval_dir) EVAL=$(value "$@"); shift 2 ;;
    --output_dir) OUT=$(value "$@"); shift 2 ;;
    --embeddings) EMB=$(value "$@"); shift 2 ;;
    --top_k) ARGS+=(--top-k "$(value "$@")"); shift 2 ;;
    --overwrite) ARGS+=(--overwrite); shift ;;
    *) unknown "$1" ;;
  esac
done
ROOT=outputs/$CATEGORY
if [[ -z "$EVAL" ]]; then
  for d in "$ROOT/evaluate_rl" "$ROOT/evaluate"; do
    [[ -f "$d/results.json" ]] || continue
    # the evaluation whose results name the model (or the last one when no model is given)
    if [[ -z "$MODEL" ]] || grep -q "\"model\": \"${MODEL%/}\"" "$d/results.json"; then
      EVAL=$d
      break
    fi
  done
  [[ -n "$EVAL" ]] || {
    echo "$(basename "$0"): no evaluation of ${MODEL:-a model} under $ROOT; pass --eval_dir" >&2
    exit 2
  }
fi
[[ -n "$EMB" || ! -f "$ROOT/embeddings/manifest.json" ]] || EMB=$ROOT/embeddings
[[ -z "$EMB" ]] || ARGS+=(--embeddings "$EMB")
run "$SIDREC" analyze --eval "$EVAL" --out "${OUT:-$ROOT/analyze}" "${ARGS[@]}"
