"""The three commands users run: train, predict and reconstruct."""
