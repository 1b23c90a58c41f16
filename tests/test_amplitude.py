"""Fields proportional to a design parameter (models/amplitude.py, training/amplitude_choice.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.data.input_scaler import InputScaler
from modules.data.scaling import NodeScaler
from modules.errors import DataError
from modules.models.amplitude import AmplitudeScaling
from modules.models.spatial_basis import SpatialBasis
from modules.training import amplitude_choice
from modules.training.amplitude_choice import (amplitude_from, candidates, choose_amplitude,
                                               constant_field_coefficients, reference_values)

NODES, STEPS = 12, 5


def fitted_basis_and_scaler(fields: np.ndarray):
    """A node scaler and a full-rank orthonormal basis (as many modes as nodes), with a non-trivial scale."""
    scaler = NodeScaler().fit_arrays(fields)
    modes, _ = torch.linalg.qr(torch.randn(NODES, NODES, generator=torch.Generator().manual_seed(1),
                                           dtype=torch.float64))
    basis = SpatialBasis(NODES, NODES).double()
    basis.set_modes(modes, node_weights=torch.linspace(0.5, 1.5, NODES, dtype=torch.float64), scale=0.37)
    return basis, scaler


def coefficients_of(basis: SpatialBasis, scaler: NodeScaler, fields: np.ndarray) -> torch.Tensor:
    return basis.project(torch.as_tensor(scaler.transform(fields.astype(np.float32))).double().transpose(1, 2))


@pytest.mark.parametrize("reference", [0.0, 3.0])
def test_the_coefficients_of_r_times_a_field_about_a_reference_are_the_unit_fields_scaled_about_its_coefficients(
        reference):
    rng = np.random.default_rng(0)
    fields = rng.normal(1.0, 2.0, size=(6, STEPS, NODES))  # a mean far from 0: the scaler shifts a lot
    basis, scaler = fitted_basis_and_scaler(fields)
    zero = constant_field_coefficients(basis, scaler, STEPS, reference).double()
    assert zero.shape == (NODES, STEPS) and zero.abs().max() > 0.1  # the scaled constant field is not zero
    amplitude = AmplitudeScaling(0, "parameter 1", 0.0, 1.0, zero, reference)
    ratios = torch.tensor([0.5, 1.0, 1.7, 2.0, 0.8, 3.0], dtype=torch.float64)
    unit = coefficients_of(basis, scaler, fields)
    scaled = coefficients_of(basis, scaler, reference + (fields - reference) * ratios.numpy()[:, None, None])
    torch.testing.assert_close(amplitude.from_unit(unit, ratios), scaled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(amplitude.to_unit(scaled, ratios), unit, rtol=1e-5, atol=1e-5)
    # at the design's timesteps only, as the decoders decode them in training
    timesteps = torch.tensor([[0, 3]] * 6)
    picked = unit.gather(2, timesteps[:, None, :].expand(-1, NODES, -1))
    torch.testing.assert_close(amplitude.from_unit(picked, ratios, timesteps),
                               scaled.gather(2, timesteps[:, None, :].expand(-1, NODES, -1)), rtol=1e-5, atol=1e-5)


def test_the_references_are_0_and_the_training_fields_extremes_each_once():
    heated = NodeScaler().fit_arrays(np.array([[[20.0, 25.0], [20.0, 90.0]]]))
    assert reference_values(heated) == [0.0, 20.0, 90.0]
    at_rest = NodeScaler().fit_arrays(np.array([[[0.0, 2.0], [-1e-12, 5.0]]]))  # its minimum is 0 to rounding
    assert reference_values(at_rest) == [0.0, 5.0]
    constant = NodeScaler().fit_arrays(np.full((1, 2, 2), 7.0))
    assert reference_values(constant) == [0.0, 7.0]


def test_r_is_the_parameter_over_its_training_mean_read_from_the_standardised_input():
    designs = np.array([[1.0, 0.5], [2.0, 1.0], [3.0, 2.5], [4.0, 4.0]])
    scaler = InputScaler().fit(designs, [0, 1, 2])
    amplitude = amplitude_from(1, scaler, designs[[0, 1, 2], 1], torch.zeros(2, 3))
    inputs = scaler.transform(designs)
    np.testing.assert_allclose(amplitude.ratios(torch.as_tensor(inputs)).numpy(), designs[:, 1] / (4.0 / 3),
                               rtol=1e-6)
    assert amplitude.name == "parameter 2"


class TwiceDecoder(torch.nn.Module):
    """A stand-in decoder: code [B, 2] -> coefficients [B, 2, 3] (each code number repeated over time)."""

    def decode_flat(self, flat, projected=False, timesteps=None):
        return flat[:, :, None].repeat(1, 1, 3)

    def design_latent(self, design):
        return design[:, :2] * 10


class Code:
    def __init__(self, flat):
        self._flat = flat

    def flat(self):
        return self._flat


def test_the_predicted_code_carries_r_and_decodes_to_r_times_the_unit_field():
    amplitude = AmplitudeScaling(2, "parameter 3", 1.0, 0.5, torch.full((2, 3), 0.25))
    predictor = amplitude.conditioner(lambda inputs: Code(inputs[:, :2] * 2))
    inputs = torch.tensor([[1.0, 2.0, 0.0], [3.0, -1.0, 2.0]])
    code = predictor(inputs).flat()
    torch.testing.assert_close(code, torch.tensor([[2.0, 4.0, 1.0], [6.0, -2.0, 2.0]]))
    decoder = amplitude.decoder(TwiceDecoder())
    decoded = decoder.decode_flat(code, projected=True)
    expected = 0.25 + (torch.tensor([[2.0, 4.0], [6.0, -2.0]])[:, :, None].repeat(1, 1, 3) - 0.25) * \
        torch.tensor([1.0, 2.0])[:, None, None]
    torch.testing.assert_close(decoded, expected)
    with pytest.raises(ValueError, match="projected=True"):
        decoder.decode_flat(code)
    # the design prior's code gets a zero for r, so adding it leaves r alone
    torch.testing.assert_close(decoder.design_latent(inputs)[:, -1], torch.zeros(2))


def test_the_scaling_round_trips_through_its_state_and_rejects_a_damaged_one():
    amplitude = AmplitudeScaling(1, "parameter 2", 0.9, 0.2, torch.randn(4, 3), 293.15)
    again = AmplitudeScaling.from_state_dict(amplitude.state_dict())
    assert (again.column, again.name, again.offset, again.slope, again.reference) == (1, "parameter 2", 0.9, 0.2,
                                                                                       293.15)
    torch.testing.assert_close(again.zero, amplitude.zero)
    assert again.describe() == "parameter 2 x a unit field (about 293.15)"
    older = {key: value for key, value in amplitude.state_dict().items() if key != "reference"}
    assert AmplitudeScaling.from_state_dict(older).reference == 0.0  # saved before references: about 0
    assert AmplitudeScaling.from_state_dict(older).describe() == "parameter 2 x a unit field"
    with pytest.raises(ValueError, match="finite mode coefficients"):
        AmplitudeScaling.from_state_dict(dict(amplitude.state_dict(), zero=torch.full((4, 3), float("nan"))))
    with pytest.raises(ValueError, match="'reference' must be a finite number"):
        AmplitudeScaling.from_state_dict(dict(amplitude.state_dict(), reference=float("inf")))


def sweep_of_a_smooth_bump(proportional: bool, cases: int = 48, seed: int = 1, ambient: float = 0.0):
    """Designs (position in [0.2, 0.8], strength in [0.5, 2], growth in [1, 3]); fields [cases, C, T] of a wide
    bump at the position growing in time, times the strength (proportional) or plus half of it, on `ambient`."""
    rng = np.random.default_rng(seed)
    designs = np.column_stack([rng.uniform(0.2, 0.8, cases), rng.uniform(0.5, 2.0, cases), rng.uniform(1, 3, cases)])
    x, t = np.linspace(0, 1, 10), np.linspace(0.2, 1, 4)
    shape = (np.exp(-((x[None, :, None] - designs[:, 0, None, None]) / 0.4) ** 2)
             * (1 + 0.3 * t[None, None, :] * designs[:, 2, None, None]))
    strength = designs[:, 1, None, None]
    return designs, torch.as_tensor(ambient + (shape * strength if proportional else shape + 0.5 * strength),
                                    dtype=torch.float64)


def about_zero(values=(0.0,)):
    """Reference fields for the stand-in sweeps, whose 'coefficients' are the fields themselves."""
    return {value: torch.full((10, 4), value, dtype=torch.float64) for value in values}


@pytest.mark.parametrize("proportional", [True, False])
def test_auto_picks_the_parameter_the_fields_are_proportional_to_and_nothing_otherwise(proportional):
    designs, fields = sweep_of_a_smooth_bump(proportional)
    train, validation = np.arange(36), np.arange(36, 48)
    scaler = InputScaler().fit(designs, train)
    inputs = torch.as_tensor(scaler.transform(designs)).float()
    amplitude, reason = choose_amplitude("auto", designs, inputs, scaler, fields, train, validation,
                                         about_zero(), latent_numbers=8)
    if proportional:
        assert amplitude is not None and amplitude.column == 1, reason
        assert "/ parameter 2" in reason and "/ parameter 1" not in reason  # the position's size slope is near 0
    else:
        assert amplitude is None and "grows with no parameter as a power near 1" in reason, reason


def test_fields_on_an_ambient_value_scale_about_it_and_not_about_0():
    # A heated plate: 20 + strength x bump. About 0 its size hardly follows the strength; about 20 it does.
    designs, fields = sweep_of_a_smooth_bump(True, ambient=20.0)
    train, validation = np.arange(36), np.arange(36, 48)
    scaler = InputScaler().fit(designs, train)
    inputs = torch.as_tensor(scaler.transform(designs)).float()
    references = about_zero((0.0, 20.0, float(fields.max())))
    amplitude, reason = choose_amplitude("auto", designs, inputs, scaler, fields, train, validation, references, 8)
    assert amplitude is not None and (amplitude.column, amplitude.reference) == (1, 20.0), reason
    assert "/ parameter 2 about 20 " in reason and reason.count("/ parameter") == 1  # about 0: no candidate
    assert choose_amplitude("auto", designs, inputs, scaler, fields, train, validation, about_zero(), 8)[0] is None
    explicit, reason = choose_amplitude("2", designs, inputs, scaler, fields, train, validation, references, 8)
    assert explicit.reference == 20.0 and "about 20" in reason
    # the prediction through it is the fields: 20 + r x (unit - 20)
    ratios = amplitude.ratios(inputs)
    torch.testing.assert_close(amplitude.from_unit(amplitude.to_unit(fields.float(), ratios), ratios), fields.float())


def test_a_parameter_the_size_follows_is_still_refused_where_dividing_by_it_does_not_help_pod_gp(monkeypatch):
    # The strength of the sweep above, but its fields no better predicted divided by it: the bar raised to 0.
    monkeypatch.setattr(amplitude_choice, "AMPLITUDE_MAX_ERROR_RATIO", 0.0)
    designs, fields = sweep_of_a_smooth_bump(True)
    scaler = InputScaler().fit(designs, np.arange(36))
    amplitude, reason = choose_amplitude("auto", designs, torch.as_tensor(scaler.transform(designs)).float(), scaler,
                                         fields, np.arange(36), np.arange(36, 48), about_zero(), latent_numbers=8)
    assert amplitude is None and "fields predicted as they are (POD + GP, validation MSE" in reason


def test_candidates_keep_one_sign_and_span_enough():
    designs = np.array([[-1.0, 1.0, 1.0, 2.0], [1.0, 1.2, 2.0, -3.0], [0.5, 1.4, 3.0, -4.0]])
    assert list(candidates(designs, np.arange(2))) == [2]  # column 4 changes sign on the training designs only
    assert list(candidates(designs, np.arange(3))) == [2]
    assert list(candidates(designs, np.arange(3), min_span=1.0)) == [1, 2]


def test_none_and_an_explicit_column_are_obeyed_and_a_column_that_changes_sign_is_refused():
    designs, fields = sweep_of_a_smooth_bump(True, cases=12)
    designs[:, 2] -= 2.0  # the third parameter now runs through 0
    train, validation = np.arange(8), np.arange(8, 12)
    scaler = InputScaler().fit(designs, train)
    inputs = torch.as_tensor(scaler.transform(designs)).float()
    zero = about_zero()
    assert choose_amplitude("none", designs, inputs, scaler, fields, train, validation, zero, 4)[0] is None
    amplitude, reason = choose_amplitude("2", designs, inputs, scaler, fields, train, validation, zero, 4)
    assert amplitude.column == 1 and "amplitude_parameter 2" in reason
    with pytest.raises(DataError, match=r"(?s)amplitude_parameter 3: parameter 3 runs from -?[\d.]+ to [\d.]+ .*fix:"):
        choose_amplitude("3", designs, inputs, scaler, fields, train, validation, zero, 4)
