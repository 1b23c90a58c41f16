"""Whether the fields are proportional to one design parameter (`amplitude_parameter`), decided on validation.

auto: each parameter whose training values keep one sign and span a factor of AMPLITUDE_MIN_SPAN or more, and
with which the training fields' size about a reference value grows as a power near 1 (the slope of
log |field - reference| on log |parameter|, within AMPLITUDE_SLOPE_TOLERANCE of 1), is a candidate; POD +
Gaussian processes (as the blend fits them, pod_gp_blend_fit.py) fitted to the training fields scaled down by it
must predict the validation fields at most AMPLITUDE_MAX_ERROR_RATIO x the mean squared error of the same fitted
to the fields themselves. The best such candidate is kept. A parameter the fields do not scale with makes the
divided fields harder to predict, not easier (impact-dev's position: README, ablations).

The references tried (reference_values): 0 (a wave or a displacement at rest), and the training fields' minimum
and maximum: a load that only heats (or only cools) leaves the ambient value as the fields' extreme, and the
rise above it is what grows with the load (the demo's plate at 20 C: slope 0.14 about 0, 0.89 about 20).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

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
def constant_field_coefficients(basis: SpatialBasis, scaler: NodeScaler, num_timesteps: int,
                                value: float = 0.0) -> torch.Tensor:
    """[C, T] float32: the mode coefficients of the physical field equal to `value` everywhere (the scaler and
    basis are affine)."""
    constant = np.full((1, num_timesteps, scaler.num_nodes), value, dtype=np.float32)
    scaled = torch.as_tensor(scaler.transform(constant)).transpose(1, 2)
    return basis.project(scaled.to(basis.modes.device, basis.modes.dtype))[0].float().cpu()


def reference_values(scaler: NodeScaler) -> List[float]:
    """0, then the training fields' minimum and maximum where they differ from 0 (and from each other) by more
    than a millionth of the fields' range."""
    low, high = float(np.min(scaler.data_min)), float(np.max(scaler.data_max))
    tolerance = 1e-6 * max(high - low, abs(high), abs(low), 1e-30)
    found = [0.0]
    for value in (low, high):
        if all(abs(value - other) > tolerance for other in found):
            found.append(value)
    return found


def reference_fields(basis: SpatialBasis, scaler: NodeScaler, num_timesteps: int) -> Dict[float, torch.Tensor]:
    """reference value -> the mode coefficients of that constant field, for reference_values(scaler)."""
    return {value: constant_field_coefficients(basis, scaler, num_timesteps, value)
            for value in reference_values(scaler)}


def amplitude_from(column: int, input_scaler: InputScaler, train_values: np.ndarray,
                   zero: torch.Tensor, reference: float = 0.0) -> AmplitudeScaling:
    """r = the parameter / its training mean, from the standardised input: parameter = mean + std x input;
    zero: the coefficients of the constant field `reference` the fields scale about."""
    mean, std = float(input_scaler.mean[column]), float(input_scaler.std[column])
    typical = float(np.mean(train_values))
    return AmplitudeScaling(column, f"parameter {column + 1}", mean / typical, std / typical, zero, reference)


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
    """The least-squares slope of log |field - reference| (its coefficients about the reference field's, `zero`)
    on log |parameter|."""
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
                     references: Dict[float, torch.Tensor], latent_numbers: int
                     ) -> Tuple[Optional[AmplitudeScaling], str]:
    """amplitude_parameter resolved for a parameter table: (the scaling, or None; the reason in words).

    raw_designs [cases, p] as the user gave them; inputs: their standardised values; coefficients [cases, C, T]
    every case's mode coefficients; references: reference_fields (0 first); latent_numbers: the code's size (the
    processes' scores: twice that, as the blend's). An explicit column scales about the reference with which the
    fields' size follows it most nearly as a power of 1."""
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
        reference = min(references, key=lambda value: abs(
            size_slope(raw_designs[train, column], coefficients[train], references[value]) - 1))
        scaling = amplitude_from(column, input_scaler, raw_designs[train, column], references[reference], reference)
        return scaling, f"amplitude_parameter {setting}: fields predicted as {scaling.describe()}"
    if len(validation) == 0:
        return None, "amplitude_parameter auto: no validation designs to decide on: fields predicted as they are"
    slopes = {(column, value): size_slope(raw_designs[train, column], coefficients[train], zero)
              for column in candidates(raw_designs, train)
              if column not in input_scaler.log_columns for value, zero in references.items()}
    pairs = [pair for pair, slope in slopes.items() if abs(slope - 1) <= AMPLITUDE_SLOPE_TOLERANCE]
    if not pairs:
        found = ", ".join(f"{_label(*pair)} {slope:.2f}" for pair, slope in slopes.items()) or "none"
        return None, ("amplitude_parameter auto: the fields' size grows with no parameter as a power near 1 (slopes "
                      f"of log size on log parameter, for parameters of one sign: {found}): fields predicted as "
                      "they are")
    scores = SCORES_PER_LATENT_NUMBER * latent_numbers
    errors: Dict[Optional[Tuple[int, float]], float] = {
        None: pod_gp_error(inputs, coefficients, train, validation, None, scores, "amplitude: POD + GP on the fields")}
    scalings = {(column, value): amplitude_from(column, input_scaler, raw_designs[train, column], references[value],
                                                value) for column, value in pairs}
    for pair, scaling in scalings.items():
        errors[pair] = pod_gp_error(inputs, coefficients, train, validation, scaling, scores,
                                    f"amplitude: POD + GP on the fields / {_label(*pair)}")
    best = min(pairs, key=lambda pair: errors[pair])
    measured = ", ".join([f"as they are {errors[None]:.4g}"] +
                         [f"/ {_label(*pair)} {errors[pair]:.4g}" for pair in pairs])
    if errors[best] <= AMPLITUDE_MAX_ERROR_RATIO * errors[None]:
        return scalings[best], (f"amplitude_parameter auto: fields predicted as {scalings[best].describe()} "
                                f"(POD + GP, validation MSE of the fields {measured})")
    return None, f"amplitude_parameter auto: fields predicted as they are (POD + GP, validation MSE {measured})"


def _label(column: int, reference: float) -> str:
    return f"parameter {column + 1}" + (f" about {reference:.6g}" if reference else "")
