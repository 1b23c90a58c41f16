"""Latent refinement: L-BFGS on the field from the encoder's guess, never ending worse than it."""
from __future__ import annotations

import pytest
import torch

from modules.config.schema import ModelConfig
from modules.data.design_features import design_features
from modules.models.vae import HierarchicalVAE
from modules.surrogate import refinement
from modules.surrogate.refinement import refine_latents, refined_timesteps

pytestmark = pytest.mark.usefixtures("single_thread")


def vae_and_targets():
    torch.manual_seed(0)
    vae = HierarchicalVAE(ModelConfig(encoder_filters=(8, 4), latent_dim_main=3, latent_dim_hier=2, decoder_width=32,
                                      decoder_depth=2), 12, 6, 4).eval()
    true_codes = torch.randn(5, vae.flat_latent_dim)
    with torch.no_grad():
        targets = vae.decode_flat(true_codes, projected=True)
    return vae, true_codes, targets


def per_case_error(vae, codes, targets):
    with torch.no_grad():
        return (vae.decode_flat(codes, projected=True) - targets).pow(2).flatten(1).sum(dim=1)


def test_refinement_finds_codes_that_decode_closer_to_the_field():
    vae, true_codes, targets = vae_and_targets()
    start = torch.zeros_like(true_codes)
    refined = refine_latents(vae, targets, start, steps=200)
    before, after = per_case_error(vae, start, targets), per_case_error(vae, refined, targets)
    assert torch.all(after < 0.2 * before)


def test_refinement_never_returns_a_worse_code_and_zero_steps_keep_the_guess():
    vae, true_codes, targets = vae_and_targets()
    # The true codes decode exactly: every step away is worse, so the best stays the guess itself.
    assert torch.equal(refine_latents(vae, targets, true_codes, steps=20), true_codes)
    guess = true_codes + 0.3 * torch.randn_like(true_codes)
    assert torch.equal(refine_latents(vae, targets, guess, steps=0), guess)
    refined = refine_latents(vae, targets, guess, steps=5)
    assert torch.all(per_case_error(vae, refined, targets) <= per_case_error(vae, guess, targets))
    assert not any(parameter.grad is not None for parameter in vae.parameters())  # the decoder stays untouched


def test_a_case_is_refined_alike_whatever_it_is_batched_with():
    vae, true_codes, targets = vae_and_targets()
    start = torch.zeros_like(true_codes)
    together = refine_latents(vae, targets, start, steps=30)
    alone = torch.cat([refine_latents(vae, targets[[case]], start[[case]], steps=30) for case in (2, 0)])
    assert torch.allclose(alone, together[[2, 0]], atol=1e-5)


def test_long_transients_are_refined_on_evenly_spread_timesteps(monkeypatch):
    monkeypatch.setattr(refinement, "REFINE_TIMESTEPS", 3)
    assert refined_timesteps(3, 2, torch.device("cpu")) is None
    assert refined_timesteps(6, 2, torch.device("cpu")).tolist() == [[0, 2, 5], [0, 2, 5]]
    vae, true_codes, targets = vae_and_targets()
    decoded = []
    original = vae.decode_flat
    monkeypatch.setattr(vae, "decode_flat", lambda *args, **kwargs: decoded.append(kwargs.get("timesteps")) or
                        original(*args, **kwargs))
    start = torch.zeros_like(true_codes)
    refined = refine_latents(vae, targets, start, steps=200)
    assert 5 < len(decoded) <= 5 * 1.25 * 200 and all(chosen.shape == (1, 3) for chosen in decoded)
    # fitted on 3 of the 6 timesteps, the code still brings the whole transient closer
    assert torch.all(per_case_error(vae, refined, targets) < 0.5 * per_case_error(vae, start, targets))


def test_design_features_are_standardised_on_the_training_cases_only():
    designs = torch.arange(20, dtype=torch.float64).reshape(10, 2).numpy() ** 2
    train = [0, 1, 2, 3, 4, 5]
    features = design_features(designs, train)
    assert features.shape == (10, 2) and features.dtype == torch.float32
    assert torch.allclose(features[train].mean(dim=0), torch.zeros(2), atol=1e-5)
    assert features[9, 0] > features[5, 0] > 0  # unseen designs keep their place along each parameter


def test_image_designs_become_a_few_whitened_scores():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(12, 1, 8, 8, generator=generator).numpy()
    features = design_features(images, list(range(9)))
    assert features.shape == (12, 8)  # at most training cases - 1 directions
    assert torch.allclose(features[:9].std(dim=0), torch.ones(8), rtol=0.2)


def test_a_second_start_near_the_field_is_refined_too_and_the_better_code_kept():
    vae, true_codes, targets = vae_and_targets()
    from modules.surrogate.refinement import nearest_starts, refined_reconstruction
    # Starts in the decoder's own space: decoys, and codes near each case's own; the nearest decode is picked.
    decoys = 3.0 + torch.randn(7, vae.flat_latent_dim)
    near = true_codes + 0.01 * torch.randn_like(true_codes)
    starts = torch.cat([decoys, near])
    assert torch.equal(nearest_starts(vae, targets, starts), near)
    with torch.no_grad():
        single = refined_reconstruction(vae, targets, steps=3)
        double = refined_reconstruction(vae, targets, steps=3, starts=starts)
        decoys_only = refined_reconstruction(vae, targets, steps=3, starts=decoys)
    error = lambda decoded: (decoded - targets).pow(2).flatten(1).sum(dim=1)
    # The encoder's guess is far from these codes (a random decoder): from the near start 3 steps reach the field.
    assert torch.all(error(double) <= error(single)) and float(error(double).max()) < 1e-3 * float(error(single).min())
    # Per case, whichever start refined better is kept: never worse than the encoder's start alone.
    assert torch.all(error(decoys_only) <= error(single))
    assert torch.equal(refined_reconstruction(vae, targets, steps=3, starts=starts[:0]), single)
