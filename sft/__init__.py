"""sidrec.sft: SFT example building, tokenizer extension, model loading, SFT training."""
