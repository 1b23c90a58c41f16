"""The trained surrogate as users keep it: saved, loaded and run for inference."""
