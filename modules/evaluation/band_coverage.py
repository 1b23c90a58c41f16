"""Calibrating the --samples band on the validation cases and measuring what it covers on held-out ones."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from modules.config.schema import DataConfig
from modules.data.sweep_file import cases_per_chunk, read_cases
from modules.runtime import memory
from modules.surrogate.band_calibration import (NOMINAL_COVERAGE, BandCalibration, band_std, conformal_scale,
                                                covered_share, normalised_residuals, std_floor)
from modules.surrogate.surrogate import Surrogate

BAND_SAMPLES = 20
"""Decodes per design for calibration and coverage: what `predict --samples 20` draws."""
BAND_CHANNELS = 4096
"""Channels (nodes) scored per chunk of cases, drawn at random when the window has more: the share of values
inside the band is estimated as well from a random sample of nodes, and decoding 21 fields per case at
95,008 nodes x 200 timesteps (~0.5 s each on 2 cores) would make the band the longest stage of a seed-size
run (~28 minutes for 48 + 48 held-out cases)."""


def scored_channels(num_channels: int) -> Optional[np.ndarray]:
    """None (all) up to BAND_CHANNELS channels, else a seeded random sample of that many, sorted."""
    if num_channels <= BAND_CHANNELS:
        return None
    return np.sort(np.random.default_rng(0).choice(num_channels, BAND_CHANNELS, replace=False))


def _sampled_chunks(surrogate: Surrogate, designs: np.ndarray, indices: np.ndarray, array, data: DataConfig):
    """(truth, prediction, the band's std) per chunk of cases, physical units, at most BAND_CHANNELS channels (a
    seeded random sample, the same for every chunk) and a chunk small enough for memory."""
    channels = scored_channels(data.channels)
    for rows in memory.chunk_slices(len(indices), cases_per_chunk(array)):
        chunk = designs[indices[rows]]
        prediction = surrogate.predict(chunk, samples=BAND_SAMPLES, seed=0, channels=channels)
        truth = read_cases(array, indices[rows], data)
        yield ((truth if channels is None else truth[:, :, channels]), prediction.fields,
               band_std(prediction.std, surrogate.band_widths(chunk)))


def calibrate_band(surrogate: Surrogate, designs: np.ndarray, indices: np.ndarray, array, data: DataConfig,
                   nominal: float = NOMINAL_COVERAGE) -> BandCalibration:
    """The split-conformal band width from the normalised residuals of `indices` (cases the conditioner did not
    train on: the validation cases)."""
    scores = []
    for chunk, (truth, center, std) in enumerate(_sampled_chunks(surrogate, designs, indices, array, data)):
        scores.append(normalised_residuals(truth, center, std, std_floor(std), seed=chunk))
    scores = np.concatenate(scores)
    scale = conformal_scale(scores, nominal)
    return BandCalibration(scale=scale, nominal=nominal, cases=len(indices),
                           covered_on_calibration=float(np.mean(scores <= scale)))


def band_coverage(surrogate: Surrogate, designs: np.ndarray, splits: Dict[str, np.ndarray], array,
                  data: DataConfig) -> Dict[str, float]:
    """{split: share of its values inside the calibrated band} (value-weighted over the split's cases)."""
    band = surrogate.conditioner.band
    coverage = {}
    for split, indices in splits.items():
        inside, total = 0.0, 0
        for truth, center, std in _sampled_chunks(surrogate, designs, indices, array, data):
            inside += covered_share(truth, center, std, band.scale, std_floor(std)) * truth.size
            total += truth.size
        coverage[split] = inside / max(total, 1)
    return coverage
