"""The training loop and what it needs: losses, metrics, optimisers, checkpoints, DDP, logging, pictures."""
