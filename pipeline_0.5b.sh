#!/usr/bin/env bash
# The one-shot run (MiniOneRec's pipeline_0.5b.sh): preflight, then data -> embeddings -> SIDs
# -> examples -> SFT -> evaluate -> RL -> evaluate -> analyze -> suggest, ending with a summary
# (what each stage did and how long it took, every output, each model's metrics beside the
# popularity and item-to-item baselines). A finished stage whose recorded settings match is
# reused; an interrupted one resumes (training from its newest checkpoint) or restarts cleanly.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'EOF'
Usage: bash pipeline_0.5b.sh [--profile demo|qwen2.5-0.5b|custom] [options] [key=value ...]

Profiles:
  qwen2.5-0.5b  Amazon-2018 Industrial_and_Scientific (downloaded), BAAI/bge-small-en-v1.5,
                constrained RQ-Kmeans SIDs, Qwen2.5-0.5B-Instruct, MiniOneRec's SFT and RL
                recipe; needs a GPU (the default when nvidia-smi finds one)
  demo          the embedded synthetic dataset, the offline MiniLM embedder and the tree
                model (SID-trie head, exact scoring), on CPU in minutes (the default without a
                GPU); model.family=lm rl.enabled=true trains a small LM and GRPO instead
  custom        your own catalog: --interactions FILE --items FILE (CSV, TSV, JSON lines or
                parquet; columns data.interactions.*_col, default user_id, item_id,
                timestamp / item_id, title), with the demo's CPU-sized model

Options:
  --dataset NAME     Amazon-2018 category (data.amazon18.dataset; amazon18 profiles)
  --interactions F   the custom profile's interactions file (data.interactions.interactions)
  --items F          the custom profile's items file (data.interactions.items)
  --sid-method M     rqkmeans | rqkmeans-constrained | rqkmeans-plus | rqvae (sid.method)
  --model NAME       a hub name, a local path, tiny-qwen2 or smollm2-135m (model.name_or_path;
                     the LM family)
  --overlay FILE     a `sidrec suggest` overlay (suggested.yaml), applied over the profile
  --from STAGE       start here; earlier stages must be complete and are used as they are
  --to STAGE         stop after this stage
                     stages: data embeddings sid examples sasrec sft evaluate rl
                             evaluate_rl analyze suggest
  --yes              take every default without asking (also when stdin is not a terminal)
  --force            rebuild every stage
  -h, --help         this help
  key=value          any config override, e.g. sft.epochs=3 evaluate.max_users=0

At each stage (without --yes, in a terminal) you choose: run, skip, reuse (its output as it
is) or stop; Enter takes the default (reuse a finished stage with the same settings, run or
resume the rest).
EOF
}

PROFILE=""
ARGS=()
OVERLAYS=()
OVERRIDES=()
YES=0
CUSTOM=0
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --profile) PROFILE=${2:?--profile needs a value}; shift 2 ;;
    --dataset) OVERRIDES+=("data.amazon18.dataset=${2:?--dataset needs a value}"); DATASET=$2; shift 2 ;;
    --interactions) OVERRIDES+=("data.interactions.interactions=${2:?--interactions needs a file}"); CUSTOM=$((CUSTOM + 1)); shift 2 ;;
    --items) OVERRIDES+=("data.interactions.items=${2:?--items needs a file}"); CUSTOM=$((CUSTOM + 1)); shift 2 ;;
    --sid-method) OVERRIDES+=("sid.method=${2:?--sid-method needs a value}"); shift 2 ;;
    --model) OVERRIDES+=("model.name_or_path=${2:?--model needs a value}"); shift 2 ;;
    --overlay) OVERLAYS+=(--overlay "${2:?--overlay needs a file}"); shift 2 ;;
    --from) ARGS+=(--from "${2:?--from needs a stage}"); shift 2 ;;
    --to) ARGS+=(--to "${2:?--to needs a stage}"); shift 2 ;;
    --yes|-y) YES=1; shift ;;
    --force) ARGS+=(--force); shift ;;
    *=*) OVERRIDES+=("$1"); shift ;;
    *) echo "pipeline_0.5b.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [[ -z "$PROFILE" ]]; then
  if nvidia-smi -L >/dev/null 2>&1; then PROFILE=qwen2.5-0.5b; else PROFILE=demo; fi
  echo "profile: $PROFILE (pass --profile to choose)"
fi
case "$PROFILE" in
  demo|qwen2.5-0.5b) CONFIG=configs/$PROFILE.yaml ;;
  custom) CONFIG=configs/demo.yaml; OVERLAYS=(--overlay configs/custom.yaml "${OVERLAYS[@]}") ;;
  *) echo "pipeline_0.5b.sh: --profile must be demo, qwen2.5-0.5b or custom, got $PROFILE" >&2; exit 2 ;;
esac
if [[ "$PROFILE" == custom && $CUSTOM -ne 2 ]]; then
  echo "pipeline_0.5b.sh: --profile custom needs --interactions FILE and --items FILE" >&2
  exit 2
fi
if [[ "$PROFILE" != custom && $CUSTOM -ne 0 ]]; then
  echo "pipeline_0.5b.sh: --interactions and --items go with --profile custom" >&2
  exit 2
fi
if [[ -n "${DATASET:-}" && "$PROFILE" == demo ]]; then
  echo "pipeline_0.5b.sh: --dataset names an Amazon-2018 category; the demo profile is synthetic" >&2
  exit 2
fi

# sidrec from PATH, else from .venv (created on first use, as `make demo` does)
if command -v sidrec >/dev/null 2>&1; then
  SIDREC=sidrec
else
  [[ -x .venv/bin/sidrec ]] || make venv
  SIDREC=.venv/bin/sidrec
fi
(( YES )) || ARGS+=(--ask)

echo "+ $SIDREC preflight --config $CONFIG ${OVERLAYS[*]} ${OVERRIDES[*]}"
"$SIDREC" preflight --config "$CONFIG" "${OVERLAYS[@]}" "${OVERRIDES[@]}"
echo "+ $SIDREC pipeline --config $CONFIG ${ARGS[*]} ${OVERLAYS[*]} ${OVERRIDES[*]}"
exec "$SIDREC" pipeline --config "$CONFIG" "${ARGS[@]}" "${OVERLAYS[@]}" "${OVERRIDES[@]}"
