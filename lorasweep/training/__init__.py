"""One training run: GRPO + LoRA, its sampler, loss, rewards and the degeneracy check (a worker, or n runs fused in one process)."""
