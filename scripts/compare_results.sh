#!/usr/bin/env bash
# Two evaluations side by side (MiniOneRec's compare_results.py): every metric with absolute and
# relative deltas, a paired bootstrap over users, and a bar chart.
# Usage: bash scripts/compare_results.sh --baseline DIR --optimized DIR [--output_dir DIR]
#   DIR: an evaluate (or sasrec) output, or its results.json
#   --output_dir  also write comparison.json and comparison.png there
source "$(dirname "$0")/_common.sh"
BASE=""
OPT=""
ARGS=()
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --baseline) BASE=$(value "$@"); shift 2 ;;
    --optimized) OPT=$(value "$@"); shift 2 ;;
    --output_dir) ARGS+=(--out "$(value "$@")"); shift 2 ;;
    *) unknown "$1" ;;
  esac
done
[[ -n "$BASE" && -n "$OPT" ]] || { usage >&2; exit 2; }
run "$SIDREC" compare "$BASE" "$OPT" "${ARGS[@]}"
