"""Training: the one loop, checkpoints, objectives and losses, and the VAE and conditioner stages."""
