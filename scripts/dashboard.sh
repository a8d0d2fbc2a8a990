#!/usr/bin/env bash
# The local SwanLab dashboard over every run logged under an output root (swanlab watch; the
# swanlab[dashboard] extra, which sidrec installs): SFT, RL and SASRec runs side by side.
# Usage: bash scripts/dashboard.sh [LOGDIR] [PORT]
#   LOGDIR  default outputs/swanlog (swanlab.log_dir, by default <output_root>/swanlog)
#   PORT    default 5092; the dashboard listens on 127.0.0.1 only
source "$(dirname "$0")/_common.sh"
[[ "${1:-}" == -h || "${1:-}" == --help ]] && { usage; exit 0; }
LOGDIR=${1:-outputs/swanlog}
PORT=${2:-5092}
[[ -d "$LOGDIR" ]] || {
  echo "$(basename "$0"): no runs logged under $LOGDIR yet: train something first" >&2
  exit 2
}
SWANLAB=$(dirname "$(command -v "$SIDREC")")/swanlab
[[ -x "$SWANLAB" ]] || SWANLAB=swanlab
echo "dashboard: http://127.0.0.1:$PORT (Ctrl-C stops it)"
run "$SWANLAB" watch "$LOGDIR" --host 127.0.0.1 --port "$PORT"
