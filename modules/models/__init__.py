"""The networks: the hierarchical VAE (encoder, decoder, linear path) and the latent conditioners."""
