#!/usr/bin/env bash
# Embeddings -> unique SIDs with rqkmeans-constrained (MiniOneRec's rqkmeans_constrained.sh): balanced residual k-means (k-means-constrained): flat code usage, fewer collisions.
# Usage: bash scripts/rqkmeans_constrained.sh [--dataset NAME] [--root DIR] [--levels 3]
#          [--codebook_size 256] [--dedup reassign|append] [--seed 42] [--config PROFILE]
#          [--overwrite]
#   --root     the run directory: reads ROOT/embeddings, writes ROOT/sid (default outputs/NAME)
#   --config   a profile whose sid section supplies the rest (epochs, lr, ...)
METHOD=rqkmeans-constrained
source "$(dirname "$0")/_sid_build.sh" "$@"
