#!/usr/bin/env bash
# Shared by the stepwise scripts (sourced): find sidrec, show a script's help, check flag
# values, and print each command before running it.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if command -v sidrec >/dev/null 2>&1; then
  SIDREC=sidrec
elif [[ -x "$REPO/.venv/bin/sidrec" ]]; then
  SIDREC="$REPO/.venv/bin/sidrec"
else
  echo "sidrec is not installed: run \`make venv\` (or pip install -e .) first" >&2
  exit 2
fi

# the calling script's header comment (every line after the shebang up to the first non-comment)
usage() {
  sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"
}

# value FLAG "$@": the value after FLAG, or a clear error when there is none
value() {
  if [[ $# -lt 2 || "$2" == --* ]]; then
    echo "$(basename "$0"): $1 needs a value (see --help)" >&2
    exit 2
  fi
  printf '%s' "$2"
}

# truth VALUE: MiniOneRec's True/False flags as true/false
truth() {
  case "${1,,}" in
    true|1|yes) echo true ;;
    false|0|no) echo false ;;
    *) echo "$(basename "$0"): expected True or False, got $1" >&2; exit 2 ;;
  esac
}

unknown() {
  echo "$(basename "$0"): unknown option $1 (see --help)" >&2
  exit 2
}

# The flags most scripts share. DATASET / ROOT: the run (outputs/DATASET unless --root);
# ARGS: what goes on to sidrec. `common_flag "$@"` takes --help, --dataset, --root, --config and
# --overwrite, sets CONSUMED to how many arguments it took, and stops on anything else.
DATASET=Industrial_and_Scientific
ROOT=""
ARGS=()
common_flag() {
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dataset) DATASET=$(value "$@"); CONSUMED=2 ;;
    --root) ROOT=$(value "$@"); CONSUMED=2 ;;
    --config) ARGS+=(--config "$(value "$@")"); CONSUMED=2 ;;
    --overwrite) ARGS+=(--overwrite); CONSUMED=1 ;;
    *) unknown "$1" ;;
  esac
}

# run CMD ...: print the command, then run it
run() {
  echo "+ $*" >&2
  "$@"
}
