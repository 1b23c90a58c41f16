"""Design images reduced to a few numbers: whitened scores on the principal components of the training images.

With `image_pca_components N > 0` each (resized, standardised) design image [C, H, W] is flattened,
centred on the mean training image and projected onto the N leading principal components of the
training images; the MLP conditioner reads those N numbers instead of the pixels.

Scores are whitened: each is divided by its standard deviation over the training images, so on the
training images every score has mean 0 and (sample) variance 1 and the scores are uncorrelated. The
MLP then sees unit-scale inputs whatever the images' contrast, and the optional parameter jitter
(aug_param_noise_std, "in standard deviations") means the same thing for scores as for CSV columns.

The fit uses the training cases only (validation images never move the components) and is a plain
SVD (scikit-learn's PCA, full solver); the state is plain tensors so it lives in the conditioner
bundle, loaded with weights_only=True.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from sklearn.decomposition import PCA

from modules.config.conditioner_rules import COMPONENTS_KEY, max_components, too_many_components_issue
from modules.errors import CheckpointError, ConfigError, ConfigIssue, DataError

ArrayLike = Union[np.ndarray, torch.Tensor]
# A component whose training variance is below this share of the first one is numerically zero:
# the images do not vary along it, and whitening it would divide rounding noise by ~0.
RELATIVE_VARIANCE_FLOOR = 1e-10


def _as_float64_numpy(images: ArrayLike) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        return images.detach().cpu().to(torch.float64).numpy()
    return np.asarray(images, dtype=np.float64)


class ImagePCA:
    """Whitened PCA scores of images [n, C, H, W] -> [n, num_components], fitted on training images."""

    def __init__(self, mean: torch.Tensor, components: torch.Tensor, score_std: torch.Tensor,
                 image_shape: Tuple[int, int, int], variance_explained: float):
        self.mean = mean                      # [C*H*W] float64: the mean training image, flattened
        self.components = components          # [N, C*H*W] float64: orthonormal rows, leading first
        self.score_std = score_std            # [N] float64: std of each raw score over the training images
        self.image_shape = tuple(int(size) for size in image_shape)
        self.variance_explained = float(variance_explained)
        """Share of the training images' total variance the N components hold (0..1)."""

    @property
    def num_components(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, images: ArrayLike, train_indices: Sequence[int], num_components: int) -> "ImagePCA":
        """Fit on images[train_indices] only ([cases, C, H, W]); raises ConfigError if they cannot give
        num_components directions (fewer than num_components + 1 images, or copies of each other)."""
        values = _as_float64_numpy(images)
        if values.ndim != 4:
            raise ValueError(f"expected images [cases, C, H, W], got shape {values.shape}")
        if num_components <= 0:
            raise ValueError(f"num_components must be positive, got {num_components}")
        indices = np.asarray(train_indices, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            raise ValueError("train_indices is empty: PCA needs training images")
        train = values[indices].reshape(len(indices), -1)
        if num_components > max_components(len(train)):
            raise ConfigError([too_many_components_issue(num_components, len(train))])
        pca = PCA(n_components=num_components, svd_solver="full").fit(train)
        variance = pca.explained_variance_
        independent = int(np.sum(variance > RELATIVE_VARIANCE_FLOOR * max(variance[0], 0.0)))
        if variance[0] <= 0 or independent < num_components:
            raise ConfigError([ConfigIssue(
                key=COMPONENTS_KEY,
                message=(f"asks for {num_components} PCA components, but the {len(train)} training images vary "
                         f"along only {independent} independent directions (the others are copies or blends)"),
                fix=f"set {COMPONENTS_KEY} to at most {independent}" if independent > 0
                else "give the cases different design images, or set image_pca_components 0")])
        return cls(mean=torch.from_numpy(pca.mean_.copy()), components=torch.from_numpy(pca.components_.copy()),
                   score_std=torch.from_numpy(np.sqrt(variance)),
                   image_shape=values.shape[1:], variance_explained=float(pca.explained_variance_ratio_.sum()))

    def _check_images(self, images: ArrayLike) -> None:
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            channels, height, width = self.image_shape
            raise DataError(f"design images have shape {list(images.shape[1:]) if images.ndim == 4 else 'not 4-D'}; "
                            f"the PCA was fitted on {channels}-channel {height}x{width} images [cases, C, H, W]\n"
                            f"    fix: load them with image_size {height} and {channels} channel(s), as in training")

    def transform(self, images: ArrayLike) -> torch.Tensor:
        """[n, C, H, W] -> whitened scores [n, num_components] float32 (on the images' device for a tensor)."""
        self._check_images(images)
        tensor = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
        flat = tensor.detach().reshape(tensor.shape[0], -1).to(torch.float64)
        device = flat.device
        scores = (flat - self.mean.to(device)) @ self.components.to(device).T / self.score_std.to(device)
        return scores.to(torch.float32)

    def reconstruct(self, scores: ArrayLike) -> torch.Tensor:
        """Whitened scores [n, num_components] -> images [n, C, H, W] float64: the projection onto the
        components' span (exact for images that lie in it, e.g. training images with all components)."""
        values = torch.as_tensor(scores, dtype=torch.float64)
        if values.ndim != 2 or values.shape[1] != self.num_components:
            raise ValueError(f"expected scores [n, {self.num_components}], got {list(values.shape)}")
        flat = (values.cpu() * self.score_std) @ self.components + self.mean
        return flat.reshape(values.shape[0], *self.image_shape)

    def state_dict(self) -> Dict[str, Union[torch.Tensor, List[int], float]]:
        return {"mean": self.mean.clone(), "components": self.components.clone(), "score_std": self.score_std.clone(),
                "image_shape": list(self.image_shape), "variance_explained": self.variance_explained}

    @classmethod
    def from_state_dict(cls, state: Dict) -> "ImagePCA":
        """Rebuild a fitted PCA; a malformed state (a damaged bundle) raises CheckpointError."""
        problems = []
        if not isinstance(state, dict):
            problems.append(f"expected a dict, got {type(state).__name__}")
        else:
            mean, components, score_std = state.get("mean"), state.get("components"), state.get("score_std")
            shape = state.get("image_shape")
            if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(isinstance(s, int) and s > 0
                                                                                 for s in shape)):
                problems.append(f"'image_shape' must be [C, H, W] of positive integers, got {shape!r}")
            elif not (isinstance(mean, torch.Tensor) and isinstance(components, torch.Tensor)
                      and isinstance(score_std, torch.Tensor) and mean.shape == (int(np.prod(shape)),)
                      and components.ndim == 2 and components.shape[1] == mean.shape[0]
                      and score_std.shape == (components.shape[0],)):
                problems.append("'mean' [C*H*W], 'components' [N, C*H*W] and 'score_std' [N] must be tensors "
                                "of matching sizes")
            elif not bool(torch.all(score_std > 0)):
                problems.append("'score_std' must be positive")
            if not isinstance(state.get("variance_explained"), float):
                problems.append("'variance_explained' must be a float")
        if problems:
            raise CheckpointError("image PCA state in the conditioner bundle is damaged: " + "; ".join(problems)
                                  + "\n    fix: retrain the conditioner to write a fresh bundle")
        return cls(mean=state["mean"].detach().to(torch.float64).cpu().clone(),
                   components=state["components"].detach().to(torch.float64).cpu().clone(),
                   score_std=state["score_std"].detach().to(torch.float64).cpu().clone(),
                   image_shape=tuple(state["image_shape"]), variance_explained=state["variance_explained"])
