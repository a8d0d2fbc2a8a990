"""sidrec.rq: text embeddings, residual quantizers, SID assignment and quality report."""
