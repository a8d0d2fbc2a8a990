"""sidrec.evaluate: constrained beam search, HR@K / NDCG@K, baselines."""
