"""SimulGenVAE: hierarchical VAE surrogates for parametric sweeps of transient simulations."""
