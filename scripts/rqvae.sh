#!/usr/bin/env bash
# Embeddings -> unique SIDs with rqvae (MiniOneRec's rqvae.sh): RQ-VAE: MLP encoder/decoder, k-means-initialised codebooks, Sinkhorn-balanced last level.
# Usage: bash scripts/rqvae.sh [--dataset NAME] [--root DIR] [--levels 3]
#          [--codebook_size 256] [--dedup reassign|append] [--seed 42] [--config PROFILE]
#          [--overwrite]
#   --root     the run directory: reads ROOT/embeddings, writes ROOT/sid (default outputs/NAME)
#   --config   a profile whose sid section supplies the rest (epochs, lr, ...)
METHOD=rqvae
source "$(dirname "$0")/_sid_build.sh" "$@"
