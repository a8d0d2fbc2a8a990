"""sidrec.rl: GRPO with constrained beam-search rollouts and ranking rewards."""
