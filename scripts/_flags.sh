#!/usr/bin/env bash
# Shared by sft.sh, sft_single_gpu_swanlab.sh, rl.sh and evaluate.sh (sourced): MiniOneRec's
# flags as sidrec arguments. `translate COMMAND ARGS...` sets CONFIG (a first argument that
# is neither a flag nor key=value; default configs/qwen2.5-0.5b.yaml) and SIDREC_ARGS (flags
# first, then key=value overrides); sidrec's own flags and overrides pass through unchanged.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

translate() {
  local cmd=$1 sample="" size=""
  shift
  CONFIG=configs/qwen2.5-0.5b.yaml
  if [[ $# -gt 0 && "$1" != -* && "$1" != *=* ]]; then
    CONFIG=$1
    shift
  fi
  SIDREC_ARGS=()
  local KV=()
  while (( $# )); do
    case "$cmd:$1" in
      *:-h|*:--help) usage; exit 0 ;;
      *:--category) KV+=("run_name=$(value "$@")") ;;
      *:--seed) KV+=("seed=$(value "$@")") ;;
      *:--output_dir) SIDREC_ARGS+=(--out "$(value "$@")") ;;
      sft:--base_model) KV+=("model.name_or_path=$(value "$@")") ;;
      sft:--batch_size) KV+=("sft.global_batch_size=$(value "$@")") ;;
      sft:--micro_batch_size) KV+=("sft.per_device_batch_size=$(value "$@")") ;;
      sft:--learning_rate) KV+=("sft.learning_rate=$(value "$@")") ;;
      sft:--num_epochs) KV+=("sft.epochs=$(value "$@")") ;;
      sft:--cutoff_len) KV+=("sft.max_length=$(value "$@")") ;;
      sft:--freeze_LLM)
        [[ $(truth "$(value "$@")") == true ]] && KV+=("sft.mode=embeddings") ;;
      rl:--model_path) SIDREC_ARGS+=(--model "$(value "$@")") ;;
      rl:--train_batch_size) KV+=("rl.per_device_batch_size=$(value "$@")") ;;
      rl:--num_train_epochs) KV+=("rl.epochs=$(value "$@")") ;;
      rl:--sample_train) sample=$(truth "$(value "$@")") ;;
      rl:--sample_size) size=$(value "$@") ;;
      rl:--num_generations) KV+=("rl.num_generations=$(value "$@")") ;;
      rl:--learning_rate) KV+=("rl.learning_rate=$(value "$@")") ;;
      rl:--beta) KV+=("rl.beta=$(value "$@")") ;;
      rl:--temperature) KV+=("rl.temperature=$(value "$@")") ;;
      rl:--sync_ref_model) KV+=("rl.sync_ref_model=$(truth "$(value "$@")")") ;;
      rl:--dynamic_sampling) KV+=("rl.drop_zero_variance=$(truth "$(value "$@")")") ;;
      rl:--beam_search)
        if [[ $(truth "$(value "$@")") == true ]]; then r=beam; else r=sample; fi
        KV+=("rl.rollout=$r") ;;
      rl:--reward_type)
        local reward
        reward=$(value "$@")
        case "$reward" in
          rule|ranking|ranking_only|semantic|sasrec) ;;
          *) echo "$(basename "$0"): --reward_type must be rule, ranking, ranking_only," \
               "semantic or sasrec, got $reward" >&2; exit 2 ;;
        esac
        for w in rule ranking ranking_only semantic sasrec; do
          KV+=("rl.rewards.$w=$([[ $w == "$reward" ]] && echo 1 || echo 0)")
        done ;;
      evaluate:--base_model) SIDREC_ARGS+=(--model "$(value "$@")") ;;
      evaluate:--num_beams) SIDREC_ARGS+=(--num-beams "$(value "$@")") ;;
      evaluate:--batch_size) SIDREC_ARGS+=(--batch-size "$(value "$@")") ;;
      *=*) KV+=("$1"); shift; continue ;;
      *) SIDREC_ARGS+=("$1"); shift; continue ;;
    esac
    shift 2
  done
  # MiniOneRec trains on a sample of sample_size rows only with --sample_train True
  if [[ "$sample" == true ]]; then
    [[ -n "$size" ]] || { echo "$(basename "$0"): --sample_train True needs --sample_size" >&2; exit 2; }
    KV+=("rl.sample_size=$size")
  elif [[ "$sample" == false ]]; then
    KV+=("rl.sample_size=0")
  elif [[ -n "$size" ]]; then
    KV+=("rl.sample_size=$size")
  fi
  # argparse takes the key=value overrides after every flag
  SIDREC_ARGS+=("${KV[@]}")
}
