"""The POD + GP blend of the prediction: Gaussian processes evaluated in torch as scikit-learn does, the weight
picked on validation, and the blended decoder's arithmetic."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from modules.models.ensemble import MembersCode
from modules.models.design_gp import DesignGaussianProcess, fit_gaussian_processes
from modules.models.pod_gp_blend import PodGpBlend
from modules.training.pod_gp_blend_fit import SCORES_PER_LATENT_NUMBER, fit_pod_gp_blend


def smooth_sweep(cases: int = 40, modes: int = 3, timesteps: int = 5, seed: int = 0):
    """Designs [cases, 2] and mode coefficients [cases, C, T] that vary smoothly with them."""
    rng = np.random.default_rng(seed)
    designs = rng.uniform(-1, 1, size=(cases, 2))
    patterns = rng.normal(size=(3, modes, timesteps))
    features = np.stack([np.sin(2 * designs[:, 0]), designs[:, 1] ** 2, designs[:, 0] * designs[:, 1]], axis=1)
    coefficients = np.einsum("cf,fmt->cmt", features, patterns)
    return torch.as_tensor(designs, dtype=torch.float32), torch.as_tensor(coefficients, dtype=torch.float32)


def test_the_torch_processes_give_scikit_learns_posterior_means():
    rng = np.random.default_rng(1)
    inputs, targets = rng.normal(size=(30, 3)) * [1, 10, 0.1], rng.normal(size=(30, 4))
    targets[:, 0] += np.sin(inputs[:, 0])
    scaler = StandardScaler().fit(inputs)
    # The first two targets get their own kernels; the last two reuse the second's (weak scores fit noise).
    processes, _ = fit_gaussian_processes(scaler.transform(inputs), targets, "test", optimised_targets=2)
    assert str(processes[2].kernel_) == str(processes[3].kernel_) == str(processes[1].kernel_)
    assert str(processes[0].kernel_) != str(processes[1].kernel_)
    assert not np.allclose(processes[2].alpha_, processes[3].alpha_)  # each still solved for its own target
    queries = rng.normal(size=(7, 3)) * [1, 10, 0.1]
    expected = np.stack([process.predict(scaler.transform(queries)) for process in processes], axis=1)
    got = DesignGaussianProcess.from_sklearn(scaler, processes)(torch.as_tensor(queries)).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert not np.allclose(expected, expected.mean(axis=0))  # the processes did learn something


def test_the_weight_is_picked_on_validation_and_a_perfect_network_gets_no_blend():
    designs, coefficients = smooth_sweep()
    train, validation = np.arange(30), np.arange(30, 40)
    noisy = coefficients[validation] + torch.randn(coefficients[validation].shape, generator=torch.Generator()
                                                   .manual_seed(0)) * coefficients.std()
    blend, reason = fit_pod_gp_blend("auto", designs, coefficients, train, validation, noisy, latent_numbers=2)
    assert blend is not None and 0.0 <= blend.weight < 1.0 and "x POD + GP" in reason
    assert blend.scores == SCORES_PER_LATENT_NUMBER * 2
    pod_gp = blend.coefficients(blend.gp(designs[validation]))
    mixed = blend.mix(noisy, pod_gp)
    truth = coefficients[validation]
    assert ((mixed - truth) ** 2).mean() < min(((noisy - truth) ** 2).mean(), ((pod_gp - truth) ** 2).mean()) + 1e-9

    exact, reason = fit_pod_gp_blend("auto", designs, coefficients, train, validation, coefficients[validation], 2)
    assert exact is None and "no blend beats the conditioners alone" in reason


def test_the_blend_is_left_out_when_asked_or_without_a_design_vector():
    designs, coefficients = smooth_sweep()
    assert fit_pod_gp_blend("0", designs, coefficients, np.arange(30), np.arange(30, 40), coefficients[30:], 2)[0] is None
    images = torch.zeros(40, 1, 4, 4)
    blend, reason = fit_pod_gp_blend("auto", images, coefficients, np.arange(30), np.arange(30, 40), coefficients[30:], 2)
    assert blend is None and "images read as pixels" in reason


def test_on_images_the_processes_read_the_members_mean_code_and_keep_reading_it_after_a_save_and_load():
    designs, coefficients = smooth_sweep()
    images = torch.randn(40, 1, 4, 4, generator=torch.Generator().manual_seed(3))  # nothing a process could read
    # Two members' codes side by side, each the design plus its own error: their mean is the design.
    error = torch.randn(40, 2, generator=torch.Generator().manual_seed(4)) * 0.3
    codes = torch.cat([designs + error, designs - error], dim=1)
    noisy = coefficients[30:] + torch.randn(coefficients[30:].shape, generator=torch.Generator().manual_seed(0)) * \
        coefficients.std()
    blend, reason = fit_pod_gp_blend("auto", images, coefficients, np.arange(30), np.arange(30, 40), noisy, 2,
                                     network_codes=codes)
    assert blend is not None and blend.reads_code == 2 and "reading the conditioners' code" in reason
    with torch.no_grad():
        torch.testing.assert_close(blend.scores_of(images[:5], codes[:5]), blend.gp(designs[:5]).float())
        # The processes learned the field from the codes: POD + GP alone beats the noisy network on validation.
        pod_gp = blend.coefficients(blend.scores_of(images[30:], codes[30:]))
        assert ((pod_gp - coefficients[30:]) ** 2).mean() < 0.5 * ((noisy - coefficients[30:]) ** 2).mean()
        loaded = PodGpBlend.from_state_dict(blend.state_dict())
        assert loaded.reads_code == 2
        network = lambda batch: MembersCode(codes[:len(batch)])  # a stand-in for the members on those images
        predicted = loaded.conditioner(network)(images[:5]).flat()
        torch.testing.assert_close(predicted, torch.cat([codes[:5], blend.gp(designs[:5]).float()], dim=1))
    # A blend saved before the processes could read codes reads the design inputs.
    older = {key: value for key, value in blend.state_dict().items() if key != "reads_code"}
    assert PodGpBlend.from_state_dict(older).reads_code == 0


class LinearDecoder(torch.nn.Module):
    """A stand-in network decoder: code [B, 2] -> coefficients [B, C, T], and a design-prior code."""

    def __init__(self, modes: int, timesteps: int):
        super().__init__()
        self.map = torch.nn.Linear(2, modes * timesteps)
        self.shape = (modes, timesteps)

    def decode_flat(self, flat, projected=False, timesteps=None):
        out = self.map(flat).reshape((-1,) + self.shape)
        return out if timesteps is None else torch.gather(out, 2, timesteps[:, None, :].expand(-1, self.shape[0], -1))

    def design_latent(self, design):
        return design[:, :2] * 0.5


class LinearConditioner(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.map = torch.nn.Linear(2, 2)

    def forward(self, inputs):
        return MembersCode(self.map(inputs))


def test_the_blended_decoder_mixes_coefficients_and_survives_a_save_and_load():
    designs, coefficients = smooth_sweep()
    noisy = coefficients[30:] + 0.5 * coefficients.std()
    blend, _ = fit_pod_gp_blend("auto", designs, coefficients, np.arange(30), np.arange(30, 40), noisy, 2)
    network = LinearDecoder(3, 5)
    decoder = PodGpBlend.from_state_dict(blend.state_dict()).decoder(network)
    conditioner = blend.conditioner(LinearConditioner())
    with torch.no_grad():
        code = conditioner(designs[:4]).flat()
        assert code.shape == (4, 2 + blend.scores)
        expected = blend.weight * network.decode_flat(code[:, :2]) + (1 - blend.weight) * \
            blend.coefficients(blend.gp(designs[:4]))
        torch.testing.assert_close(decoder.decode_flat(code, projected=True), expected)
        steps = torch.tensor([[0, 4], [1, 1], [2, 3], [4, 0]])
        torch.testing.assert_close(decoder.decode_flat(code, projected=True, timesteps=steps),
                                   torch.gather(expected, 2, steps[:, None, :].expand(-1, 3, -1)))
        prior = decoder.design_latent(designs[:4])
        assert torch.equal(prior[:, :2], designs[:4] * 0.5) and torch.equal(prior[:, 2:], torch.zeros(4, blend.scores))
    with pytest.raises(ValueError, match="mode coefficients only"):
        decoder.decode_flat(code, projected=False)


def test_with_unit_fields_the_weight_is_picked_on_the_fields_they_stand_for():
    # The network is far off on the first half of the validation designs and exact on the second; mapped to their
    # fields the first half counts for nothing, so the network alone is best there, not on the unit fields.
    designs, coefficients = smooth_sweep()
    train, validation = np.arange(30), np.arange(30, 40)
    network = coefficients[validation].clone()
    network[:5] += 3 * coefficients.std()
    unit_blend, _ = fit_pod_gp_blend("auto", designs, coefficients, train, validation, network, latent_numbers=2)
    assert unit_blend is not None and unit_blend.weight < 1.0
    scale = torch.tensor([0.0] * 5 + [1.0] * 5)[:, None, None]
    blend, reason = fit_pod_gp_blend("auto", designs, coefficients, train, validation, network, latent_numbers=2,
                                     to_fields=lambda unit: unit * scale)
    assert blend is None and "no blend beats the conditioners alone" in reason
