"""Whether the fields are proportional to one design parameter (`amplitude_parameter`), decided on validation.

auto: each parameter whose training values keep one sign and span a factor of AMPLITUDE_MIN_SPAN or more, and
with which the training fields' size grows as a power near 1 (the slope of log |field| on log |parameter|,
within AMPLITUDE_SLOPE_TOLERANCE of 1), is a candidate; POD + Gaussian processes (as the blend fits them, pod_gp_blend_fit.py) fitted to the training fields
divided by it must predict the validation fields at most AMPLITUDE_MAX_ERROR_RATIO x the mean squared error of
the same fitted to the fields themselves. The best such candidate is kept. A parameter the fields do not scale
with makes the divided fields harder to predict, not easier (impact-dev's position: README, ablations).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler

from modules.data.input_scaler import InputScaler
from modules.data.scaling import NodeScaler
from modules.errors import DataError
from modules.models.amplitude import AmplitudeScaling
from modules.models.case_pca import CasePCA
from modules.models.design_gp import DesignGaussianProcess, fit_gaussian_processes
from modules.models.spatial_basis import SpatialBasis
from modules.training.pod_gp_blend_fit import OPTIMISED_SCORES, SCORES_PER_LATENT_NUMBER

AMPLITUDE_MIN_SPAN = 1.5
"""max / min of a candidate's training values: a load varied by less barely changes the field's size."""
AMPLITUDE_SLOPE_TOLERANCE = 0.3
"""Measured slopes of log |field| on log |parameter| over the training designs: impact-dev's strength 1.09 and
contact time 1.24 (the impulse grows with it; POD + GP then rejects it), its position and damping -0.32-0.13;
front-dev's parameters -0.73-0.58; a synthetic bump times its strength 1.00, its position 0.11. Other parameters
change the size too, so the slope of a true amplitude scatters about 1."""
AMPLITUDE_MAX_ERROR_RATIO = 0.9
"""A candidate must cut the validation MSE of POD + GP by 10 % or more: 16 validation designs scatter. Measured with the blend's POD + GP (56 scores, 16 optimised; relative errors, the fields divided by each
parameter against the fields as they are): impact-dev's strength 0.81x on validation and 0.82x on the test designs
(0.349 -> 0.285), every other parameter 0.96-2.6x; front-dev 0.98-1.07x, nothing scales. With 16 scores the
truncation hid the gain (0.96x): the processes need the blend's 56."""


@torch.no_grad()
def zero_field_coefficients(basis: SpatialBasis, scaler: NodeScaler, num_timesteps: int) -> torch.Tensor:
    """[C, T] float32: the mode coefficients of the all-zero physical field (the scaler and basis are affine)."""
    zero = np.zeros((1, num_timesteps, scaler.num_nodes), dtype=np.float32)
    scaled = torch.as_tensor(scaler.transform(zero)).transpose(1, 2)
    return basis.project(scaled.to(basis.modes.device, basis.modes.dtype))[0].float().cpu()


def amplitude_from(column: int, input_scaler: InputScaler, train_values: np.ndarray,
                   zero: torch.Tensor) -> AmplitudeScaling:
    """r = the parameter / its training mean, from the standardised input: parameter = mean + std x input."""
    mean, std = float(input_scaler.mean[column]), float(input_scaler.std[column])
    reference = float(np.mean(train_values))
    return AmplitudeScaling(column, f"parameter {column + 1}", mean / reference, std / reference, zero)


def candidates(raw_designs: np.ndarray, train: np.ndarray, min_span: float = AMPLITUDE_MIN_SPAN) -> Sequence[int]:
    """Columns whose training values keep one sign (never 0) and span a factor of min_span or more."""
    values = raw_designs[train]
    found = []
    for column in range(values.shape[1]):
        magnitude = np.abs(values[:, column])
        same_sign = bool(np.all(values[:, column] > 0) or np.all(values[:, column] < 0))
        if same_sign and magnitude.max() >= min_span * magnitude.min():
            found.append(column)
    return found


def size_slope(values: np.ndarray, coefficients: torch.Tensor, zero: torch.Tensor) -> float:
    """The least-squares slope of log |field| (its coefficients about the zero field's) on log |parameter|."""
    sizes = (coefficients.double() - zero.double()).flatten(1).norm(dim=1).clamp_min(1e-300).log().numpy()
    return float(np.polyfit(np.log(np.abs(values)), sizes, 1)[0])


def pod_gp_error(inputs: torch.Tensor, coefficients: torch.Tensor, train: np.ndarray, validation: np.ndarray,
                 amplitude: Optional[AmplitudeScaling], scores: int, label: str) -> float:
    """Validation MSE (basis units, against the real fields) of POD + GP on `scores` case-PCA scores, fitted to
    the training fields divided by the amplitude's r when one is given."""
    targets = coefficients if amplitude is None else amplitude.to_unit(coefficients, amplitude.ratios(inputs))
    pca = CasePCA.fit(targets[train], scores)
    train_inputs = inputs[train].double().numpy()
    scaler = StandardScaler().fit(train_inputs)
    processes, _ = fit_gaussian_processes(scaler.transform(train_inputs), pca.scores(targets[train]).numpy(), label,
                                          n_restarts_optimizer=0, optimised_targets=OPTIMISED_SCORES)
    gp = DesignGaussianProcess.from_sklearn(scaler, processes)
    scores = gp(inputs[validation]).double()
    predicted = (pca.mean + (scores * pca.spread) @ pca.directions).reshape((len(validation),) + coefficients.shape[1:])
    if amplitude is not None:
        predicted = amplitude.from_unit(predicted, amplitude.ratios(inputs[validation]).double())
    return float(((predicted - coefficients[validation].double()) ** 2).mean())


def choose_amplitude(setting: str, raw_designs: np.ndarray, inputs: torch.Tensor, input_scaler: InputScaler,
                     coefficients: torch.Tensor, train: Sequence[int], validation: Sequence[int],
                     zero: torch.Tensor, latent_numbers: int) -> Tuple[Optional[AmplitudeScaling], str]:
    """amplitude_parameter resolved for a parameter table: (the scaling, or None; the reason in words).

    raw_designs [cases, p] as the user gave them; inputs: their standardised values; coefficients [cases, C, T]
    every case's mode coefficients; zero: zero_field_coefficients; latent_numbers: the code's size (the processes'
    scores: twice that, as the blend's)."""
    train, validation = np.asarray(train, dtype=np.int64), np.asarray(validation, dtype=np.int64)
    if setting == "none":
        return None, "amplitude_parameter none: fields predicted as they are"
    if setting != "auto":
        column = int(setting) - 1
        if column not in candidates(raw_designs, train, min_span=1.0):
            values = raw_designs[train, column]
            raise DataError(f"amplitude_parameter {setting}: parameter {setting} runs from {values.min():g} to "
                            f"{values.max():g} on the training designs; a field can only be proportional to a "
                            "parameter that keeps one sign and is never 0\n"
                            "    fix: set amplitude_parameter in condition.txt to the column of the load's amplitude "
                            "(1-based), or to auto or none")
        return (amplitude_from(column, input_scaler, raw_designs[train, column], zero),
                f"amplitude_parameter {setting}: fields predicted as parameter {setting} x a unit field")
    if len(validation) == 0:
        return None, "amplitude_parameter auto: no validation designs to decide on: fields predicted as they are"
    slopes = {column: size_slope(raw_designs[train, column], coefficients[train], zero)
              for column in candidates(raw_designs, train)}
    columns = [column for column, slope in slopes.items() if abs(slope - 1) <= AMPLITUDE_SLOPE_TOLERANCE]
    if not columns:
        found = ", ".join(f"parameter {column + 1} {slope:.2f}" for column, slope in slopes.items()) or "none"
        return None, ("amplitude_parameter auto: the fields' size grows with no parameter as a power near 1 (slopes "
                      f"of log size on log parameter, for parameters of one sign: {found}): fields predicted as "
                      "they are")
    scores = SCORES_PER_LATENT_NUMBER * latent_numbers
    errors: Dict[Optional[int], float] = {None: pod_gp_error(inputs, coefficients, train, validation, None, scores,
                                                            "amplitude: POD + GP on the fields")}
    scalings = {column: amplitude_from(column, input_scaler, raw_designs[train, column], zero) for column in columns}
    for column, scaling in scalings.items():
        errors[column] = pod_gp_error(inputs, coefficients, train, validation, scaling, scores,
                                      f"amplitude: POD + GP on the fields / parameter {column + 1}")
    best = min(columns, key=lambda column: errors[column])
    measured = ", ".join([f"as they are {errors[None]:.4g}"] +
                         [f"/ parameter {column + 1} {errors[column]:.4g}" for column in columns])
    if errors[best] <= AMPLITUDE_MAX_ERROR_RATIO * errors[None]:
        return scalings[best], (f"amplitude_parameter auto: fields predicted as parameter {best + 1} x a unit field "
                                f"(POD + GP, validation MSE of the fields {measured})")
    return None, f"amplitude_parameter auto: fields predicted as they are (POD + GP, validation MSE {measured})"
