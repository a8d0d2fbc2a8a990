"""sidrec.baselines: classic recommenders on the same splits and files (SASRec and its
variants, two-tower retrieval with faiss, the DeepFM / Wide&Deep ranker)."""
