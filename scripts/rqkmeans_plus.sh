#!/usr/bin/env bash
# Embeddings -> unique SIDs with rqkmeans-plus (MiniOneRec's rqkmeans_plus.sh): RQ-Kmeans+: balanced codebooks, then an encoder trained on reconstruction + RQ losses.
# Usage: bash scripts/rqkmeans_plus.sh [--dataset NAME] [--root DIR] [--levels 3]
#          [--codebook_size 256] [--dedup reassign|append] [--seed 42] [--config PROFILE]
#          [--overwrite]
#   --root     the run directory: reads ROOT/embeddings, writes ROOT/sid (default outputs/NAME)
#   --config   a profile whose sid section supplies the rest (epochs, lr, ...)
METHOD=rqkmeans-plus
source "$(dirname "$0")/_sid_build.sh" "$@"
