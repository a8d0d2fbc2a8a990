#!/usr/bin/env bash
# Embeddings -> unique SIDs with rqkmeans (MiniOneRec's rqkmeans_faiss.sh): residual k-means with faiss: the fastest.
# Usage: bash scripts/rqkmeans_faiss.sh [--dataset NAME] [--root DIR] [--levels 3]
#          [--codebook_size 256] [--dedup reassign|append] [--seed 42] [--config PROFILE]
#          [--overwrite]
#   --root     the run directory: reads ROOT/embeddings, writes ROOT/sid (default outputs/NAME)
#   --config   a profile whose sid section supplies the rest (epochs, lr, ...)
METHOD=rqkmeans
source "$(dirname "$0")/_sid_build.sh" "$@"
