#!/usr/bin/env bash
# Optimization strategies from a bad-case report (MiniOneRec's optimization_strategies.py): each
# of long_tail, cold_start, short_history, sid_quality, recency_bias and hyperparameter judged on
# its evidence, and the chosen ones' changes written as a config overlay that every stage reads
# (sidrec pipeline --config BASE --overlay OUTPUT_CONFIG).
# Usage: bash scripts/optimization_strategies.sh --badcase_report FILE --output_config FILE
#          [--auto_recommend]
#   --auto_recommend  take every strategy past its threshold (otherwise you choose in the
#                     terminal)
source "$(dirname "$0")/_common.sh"
REPORT=""
OUT=""
ARGS=()
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --badcase_report) REPORT=$(value "$@"); shift 2 ;;
    --output_config) OUT=$(value "$@"); shift 2 ;;
    --auto_recommend) ARGS+=(--auto); shift ;;
    *) unknown "$1" ;;
  esac
done
[[ -n "$REPORT" && -n "$OUT" ]] || { usage >&2; exit 2; }
run "$SIDREC" suggest --report "$REPORT" --out "$OUT" "${ARGS[@]}"
