"""The networks: the hierarchical VAE (spatial basis, encoder, decoder, design prior) and the latent conditioners."""
