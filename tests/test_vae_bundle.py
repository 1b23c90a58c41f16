"""The saved VAE bundle: a bundle that trained only variable 0 of several is refused with the fix."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.config.schema import DataConfig, ModelConfig, RunConfig
from modules.data.scaling import NodeScaler
from modules.errors import CheckpointError
from modules.models.vae import HierarchicalVAE
from modules.surrogate.vae_bundle import load_vae_bundle, save_vae_bundle

MODEL = ModelConfig(encoder_filters=(4, 2), latent_dim_main=2, latent_dim_hier=1)


def bundle(tmp_path, num_variables: int, channels: int):
    config = RunConfig(data=DataConfig(num_cases=4, num_timesteps=3, num_nodes=5, num_variables=num_variables),
                       model=MODEL)
    scaler = NodeScaler().fit_arrays(np.random.default_rng(0).normal(size=(4, 3, channels)))
    path = tmp_path / "SimulGen-VAE"
    save_vae_bundle(path, HierarchicalVAE(MODEL, channels, 3, 2), config, scaler, np.arange(3), np.array([3]))
    return path


def test_a_bundle_of_every_variable_loads(tmp_path):
    loaded = load_vae_bundle(bundle(tmp_path, num_variables=2, channels=10), torch.device("cpu"))
    assert loaded.model.num_nodes == loaded.config.data.channels == 10


def test_a_bundle_that_kept_only_variable_0_is_refused(tmp_path):
    path = bundle(tmp_path, num_variables=2, channels=5)  # as the earlier version saved it
    with pytest.raises(CheckpointError) as caught:
        load_vae_bundle(path, torch.device("cpu"))
    assert str(caught.value) == (
        f"{path}: the VAE reads 5 channels, but its data window (3 timesteps x 5 nodes x 2 variables) has 10: it "
        f"was written by an earlier version that trained only variable 0 of num_var 2\n"
        f"    fix: train it again; every variable is trained now")


def test_a_saved_vae_decodes_the_same_after_loading(tmp_path):
    torch.manual_seed(0)
    config = RunConfig(data=DataConfig(num_cases=4, num_timesteps=3, num_nodes=5), model=MODEL)
    model = HierarchicalVAE(MODEL, 5, 3, 2, design_features=2)
    model.basis.set_modes(torch.linalg.qr(torch.randn(5, 2))[0], torch.rand(5) + 0.5, 0.3)
    scaler = NodeScaler().fit_arrays(np.random.default_rng(0).normal(size=(4, 3, 5)))
    path = save_vae_bundle(tmp_path / "SimulGen-VAE", model, config, scaler, np.arange(3), np.array([3]))
    loaded = load_vae_bundle(path, torch.device("cpu")).model
    assert (loaded.num_modes, loaded.design_features) == (2, 2)
    latents, design = torch.randn(3, model.flat_latent_dim), torch.randn(3, 2)
    with torch.no_grad():
        assert torch.equal(loaded.decode_flat(latents), model.eval().decode_flat(latents))
        assert torch.equal(loaded.design_latent(design), model.design_latent(design))


def test_a_bundle_of_the_earlier_model_is_refused_with_the_fix(tmp_path):
    from modules.storage.state_files import save_state

    path = save_state(tmp_path / "old", {"format": "simulgenvae-vae-1"})
    with pytest.raises(CheckpointError, match=r"an earlier version of this tool \(simulgenvae-vae-1\).*\n    fix: train "
                                              r"it again with this version"):
        load_vae_bundle(path, torch.device("cpu"))


def test_the_columns_its_design_prior_read_as_logarithms_are_saved_and_older_bundles_read_none(tmp_path):
    from modules.storage.state_files import load_state, save_state

    config = RunConfig(data=DataConfig(num_cases=4, num_timesteps=3, num_nodes=5), model=MODEL)
    scaler = NodeScaler().fit_arrays(np.random.default_rng(0).normal(size=(4, 3, 5)))
    model = HierarchicalVAE(MODEL, 5, 3, 2, design_features=3)
    path = save_vae_bundle(tmp_path / "SimulGen-VAE", model, config, scaler, np.arange(3), np.array([3]),
                           design_log_columns=[0, 2])
    assert load_vae_bundle(path, torch.device("cpu")).design_log_columns == (0, 2)
    state = load_state(path)
    older = save_state(tmp_path / "older", {key: value for key, value in state.items()
                                            if key != "design_log_columns"})
    assert load_vae_bundle(older, torch.device("cpu")).design_log_columns == ()
    damaged = save_state(tmp_path / "damaged", dict(state, design_log_columns=torch.tensor([0.5])))
    with pytest.raises(CheckpointError, match="'design_log_columns' is damaged"):
        load_vae_bundle(damaged, torch.device("cpu"))
