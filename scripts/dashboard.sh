#!/usr/bin/env bash
# Open the local SwanLab dashboard over the runs logged under LOGDIR (swanlab watch; the
# swanlab[dashboard] extra, which sidrec installs). Usage: bash scripts/dashboard.sh [LOGDIR] [PORT]
set -euo pipefail
LOGDIR=${1:-outputs}
PORT=${2:-5092}
if [[ "$LOGDIR" == outputs ]]; then
  # every run's swanlog/ under outputs/: point at the newest
  LOGDIR=$(ls -dt outputs/*/*/swanlog 2>/dev/null | head -1 || true)
  [[ -n "$LOGDIR" ]] || { echo "no swanlog/ under outputs/ yet: train something first" >&2; exit 2; }
fi
exec swanlab watch "$LOGDIR" --port "$PORT"
