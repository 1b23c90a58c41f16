"""The sweep and the designs: files, checks, splits, scaling, datasets and the built-in demo sweep."""
