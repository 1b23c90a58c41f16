"""The designs as a short vector per case: what the VAE's design prior reads during training.

Parameter tables are standardised with the training cases' statistics; images are standardised and then
projected on the leading principal components of the training images (whitened scores), since a prior that
only shapes the latent space needs the designs' main directions, not their pixels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from modules.data.designs import scaled_inputs
from modules.data.image_pca import ImagePCA
from modules.data.input_scaler import InputScaler

IMAGE_FEATURES = 16
"""Whitened PCA scores per design image (fewer when the training images span fewer directions)."""


def design_features(designs: np.ndarray, train_indices: np.ndarray, log_columns: Sequence[int] = ()) -> torch.Tensor:
    """designs [cases, p] or images [cases, C, S, S] -> [cases, D] float32 features, fitted on training cases;
    log_columns: the table columns read as logarithms, as the conditioner reads them (data/log_spacing.py)."""
    scaled = scaled_inputs(designs, InputScaler().fit(designs, train_indices, log_columns))
    if scaled.dim() == 2:
        return scaled
    count = max(1, min(IMAGE_FEATURES, len(train_indices) - 1))
    return ImagePCA.fit(scaled, train_indices, count).transform(scaled)


def baseline_features(designs: np.ndarray, train_indices: np.ndarray) -> np.ndarray:
    """[cases, p] float64 inputs of the classical baselines: the parameters themselves, or for images the same
    whitened PCA scores the design prior reads. A Gaussian process with one length scale per pixel on
    block-averaged images (earlier versions) fitted 256 length scales per mode and ran for over 20 minutes on
    240 designs; on 16 scores it fits 16 length scales per mode and sees the images' main directions."""
    if designs.ndim == 2:
        return designs.astype(np.float64)
    return design_features(designs, train_indices).numpy().astype(np.float64)
