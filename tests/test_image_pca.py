"""Image PCA as the conditioner's input: the fit, whitening, state round trip, config rules, and the whole
command (train with image_pca_components, then `predict --images` reproduces the in-run evaluation)."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from modules.storage.state_files import load_state, save_state
from modules.data.input_scaler import InputScaler
from modules.models.conditioner_mlp import ParametricConditioner
from modules.surrogate.conditioner_bundle import load_conditioner_bundle
from modules.config.validation import validate
from modules.config.conditioner_rules import resolve_architecture
from modules.models.conditioners import build_conditioner
from modules.config.schema import ConditionerConfig, DataConfig, RunConfig
from modules.data.designs import scaled_inputs
from modules.errors import CheckpointError, ConfigError, DataError
from modules.evaluation.metrics import relative_l2_per_case
from modules.data.image_pca import ImagePCA
from tiny_sweep import load_entry, tiny_condition, tiny_preset


def images(count: int, seed: int = 0, shape=(2, 3, 4)) -> np.ndarray:
    return np.random.default_rng(seed).random((count, *shape)).astype(np.float32)


def numpy_projection(train: np.ndarray, x: np.ndarray, count: int) -> np.ndarray:
    """x projected onto mean + span of the `count` leading right singular vectors of the centred training images."""
    flat = train.reshape(len(train), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[:count]
    centred = x.reshape(len(x), -1).astype(np.float64) - mean
    return (mean + centred @ basis.T @ basis).reshape(x.shape)


# ---------------------------------------------------------------- the fit

def test_all_components_reconstruct_training_images_exactly():
    data = images(6)
    pca = ImagePCA.fit(data, np.arange(6), num_components=5)  # 6 centred images span 5 directions
    rebuilt = pca.reconstruct(pca.transform(data)).numpy()
    assert rebuilt.shape == data.shape
    np.testing.assert_allclose(rebuilt, data, atol=1e-6)  # float32 images -> float32 scores


def test_fewer_components_equal_the_numpy_svd_projection_for_train_and_new_images():
    data = images(10, seed=1)
    train, new = data[:8], data[8:]
    pca = ImagePCA.fit(data, np.arange(8), num_components=3)
    for x in (train, new):
        scores = pca.transform(torch.from_numpy(x)).to(torch.float64)
        np.testing.assert_allclose(pca.reconstruct(scores).numpy(), numpy_projection(train, x, 3), atol=1e-5)


def test_scores_are_whitened_raw_projections():
    """score_j = ((x - mean) . v_j) / (s_j / sqrt(k - 1)), up to the sign of v_j."""
    data = images(8, seed=2)
    pca = ImagePCA.fit(data, np.arange(8), num_components=4)
    flat = data.reshape(8, -1).astype(np.float64)
    _, singular, vt = np.linalg.svd(flat - flat.mean(axis=0), full_matrices=False)
    expected = (flat - flat.mean(axis=0)) @ vt[:4].T / (singular[:4] / np.sqrt(7))
    np.testing.assert_allclose(np.abs(pca.transform(data).numpy()), np.abs(expected), atol=1e-5)


def test_training_scores_have_zero_mean_and_identity_covariance():
    data = images(9, seed=3)
    pca = ImagePCA.fit(data, np.arange(9), num_components=5)
    scores = pca.transform(data).numpy().astype(np.float64)
    assert scores.shape == (9, 5) and pca.transform(data).dtype == torch.float32
    np.testing.assert_allclose(scores.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.cov(scores, rowvar=False), np.eye(5), atol=1e-5)
    assert 0.0 < pca.variance_explained < 1.0


def test_validation_images_do_not_move_the_components():
    data = images(10, seed=4)
    train_indices = np.array([0, 2, 3, 5, 6, 8, 9])
    first = ImagePCA.fit(data, train_indices, num_components=4)
    changed = data.copy()
    changed[[1, 4, 7]] = 100.0 * images(3, seed=99)  # only the held-out cases differ
    second = ImagePCA.fit(changed, train_indices, num_components=4)
    assert torch.equal(first.mean, second.mean) and torch.equal(first.components, second.components)
    assert torch.equal(first.score_std, second.score_std)
    all_cases = ImagePCA.fit(changed, np.arange(10), num_components=4)
    assert not torch.allclose(all_cases.mean, first.mean)


def test_state_dict_round_trips_through_a_weights_only_file(tmp_path):
    data = images(7, seed=5)
    pca = ImagePCA.fit(data, np.arange(7), num_components=3)
    torch.save({"image_pca": pca.state_dict()}, tmp_path / "pca.pt")
    loaded = ImagePCA.from_state_dict(torch.load(tmp_path / "pca.pt", weights_only=True)["image_pca"])
    assert loaded.image_shape == (2, 3, 4) and loaded.num_components == 3
    assert loaded.variance_explained == pca.variance_explained
    assert torch.equal(loaded.transform(data), pca.transform(data))


def test_damaged_state_is_a_checkpoint_error():
    state = ImagePCA.fit(images(5), np.arange(5), num_components=2).state_dict()
    state["score_std"] = state["score_std"][:1]
    with pytest.raises(CheckpointError, match=r"'mean' \[C\*H\*W\], 'components' \[N, C\*H\*W\] and 'score_std'"):
        ImagePCA.from_state_dict(state)


def test_images_of_another_size_are_refused():
    pca = ImagePCA.fit(images(5), np.arange(5), num_components=2)
    with pytest.raises(DataError, match=r"have shape \[2, 4, 4\]; the PCA was fitted on 2-channel 3x4 images"):
        pca.transform(images(2, shape=(2, 4, 4)))


def test_more_components_than_training_images_support_is_an_error_naming_the_limit():
    with pytest.raises(ConfigError) as caught:
        ImagePCA.fit(images(10), np.arange(6), num_components=6)
    assert str(caught.value) == (
        "1 configuration problem found:\n"
        "  - key 'image_pca_components': asks for 6 PCA components, but the 6 training images span at most "
        "5 directions (images centred on their mean lose one)\n"
        "    fix: set image_pca_components to at most 5, or hold out fewer cases (validation_fraction)")


def test_copied_training_images_are_an_error_not_a_division_by_zero():
    base = images(3, seed=6)
    data = np.concatenate([base, base])  # 6 images, 2 independent directions once centred
    with pytest.raises(ConfigError, match="vary along only 2 independent directions") as caught:
        ImagePCA.fit(data, np.arange(6), num_components=3)
    assert "fix: set image_pca_components to at most 2" in str(caught.value)


# ---------------------------------------------------------------- config rules

def test_pca_turns_auto_and_mlp_into_an_mlp_reading_the_scores():
    for architecture in ("auto", "mlp"):
        cfg = ConditionerConfig(input_type="image", architecture=architecture, image_pca_components=7,
                                num_params=5, filters=(8, 8))
        assert resolve_architecture(cfg) == "mlp"
        model = build_conditioner(cfg, latent_dim_main=4, latent_dim_hier=2, num_hier_levels=1)
        assert isinstance(model, ParametricConditioner) and model.num_params == 7
        assert model(torch.zeros(3, 7)).flat().shape == (3, 6)
    assert resolve_architecture(ConditionerConfig(input_type="image")) == "cnn"  # 0 keeps the pixels


@pytest.mark.parametrize("architecture", ["cnn", "vit"])
def test_pixel_networks_with_pca_are_a_config_error(architecture):
    cfg = ConditionerConfig(input_type="image", architecture=architecture, image_pca_components=32)
    with pytest.raises(ConfigError) as caught:
        resolve_architecture(cfg)
    assert str(caught.value) == (
        "1 configuration problem found:\n"
        f"  - key 'image_pca_components': 32 feeds PCA scores of the images to an MLP, but conditioner_type "
        f"is '{architecture}', which reads pixels\n"
        f"    fix: set conditioner_type to mlp or auto to use the PCA scores, or set image_pca_components "
        f"to 0 to feed the pixels to the {architecture}")


def test_pca_of_csv_parameters_is_a_config_error():
    with pytest.raises(ConfigError) as caught:
        resolve_architecture(ConditionerConfig(input_type="csv", image_pca_components=4))
    assert str(caught.value) == (
        "1 configuration problem found:\n"
        "  - key 'image_pca_components': 4 projects design images onto PCA components, but input_type is 'csv'\n"
        "    fix: set image_pca_components to 0 for CSV parameters, or set input_type to image")


def test_too_many_components_are_found_from_the_config_before_any_training():
    config = RunConfig(data=DataConfig(num_cases=16, validation_fraction=0.25),
                       conditioner=ConditionerConfig(input_type="image", image_pca_components=12))
    with pytest.raises(ConfigError, match="asks for 12 PCA components, but the 12 training images span at most 11"):
        validate(config)
    validate(dataclasses.replace(config, conditioner=dataclasses.replace(
        config.conditioner, image_pca_components=11)))


def test_a_bundle_written_before_image_pca_existed_still_loads(tmp_path):
    """The old format: no 'image_pca' entry and no image_pca_components in the saved settings."""
    cfg = ConditionerConfig(num_params=3, filters=(8, 8))
    torch.manual_seed(0)
    model = build_conditioner(cfg, latent_dim_main=4, latent_dim_hier=2, num_hier_levels=1)
    designs = np.random.default_rng(7).random((6, 3))
    scaler = InputScaler().fit(designs, np.arange(6))
    settings = dataclasses.asdict(cfg)
    del settings["image_pca_components"]
    save_state(tmp_path / "old.pt", {
        "format": "simulgenvae-conditioner-1", "model": model.state_dict(), "conditioner_config": settings,
        "spectral_norm": False, "latent_dims": [4, 2, 1], "input_kind": "csv", "in_channels": 1,
        "input_scaler": scaler.state_dict(), "latent_residual_std": torch.ones(6), "seed": 0})
    loaded = load_conditioner_bundle(tmp_path / "old.pt", torch.device("cpu"))
    assert loaded.image_pca is None and loaded.config.image_pca_components == 0
    assert torch.equal(loaded.model_inputs(designs), scaled_inputs(designs, scaler))


def load_older_image_bundle(tmp_path, cfg: ConditionerConfig, model: torch.nn.Module, without: tuple):
    """Save `model` as a bundle of an older version, whose config had no `without` keys, and load it back."""
    settings = dataclasses.asdict(cfg)
    for key in without:
        del settings[key]
    pixels = images(6, shape=(1, 16, 16))
    save_state(tmp_path / "old.pt", {
        "format": "simulgenvae-conditioner-1", "model": model.state_dict(), "conditioner_config": settings,
        "spectral_norm": False, "latent_dims": [4, 2, 1], "input_kind": "image", "in_channels": 1,
        "input_scaler": InputScaler().fit(pixels, np.arange(6)).state_dict(),
        "latent_residual_std": torch.ones(6), "seed": 0})
    return load_conditioner_bundle(tmp_path / "old.pt", torch.device("cpu"))


def test_an_image_bundle_written_before_coordinates_and_keypoints_existed_loads_its_cnn_as_it_was(tmp_path):
    cfg = ConditionerConfig(input_type="image", filters=(8, 8), image_coordinates=False, image_features="pooled")
    torch.manual_seed(0)
    model = build_conditioner(cfg, latent_dim_main=4, latent_dim_hier=2, num_hier_levels=1)
    loaded = load_older_image_bundle(tmp_path, cfg, model, without=("image_coordinates", "image_features"))
    assert not loaded.config.image_coordinates and not loaded.model.coordinate_channels
    assert loaded.config.image_features == "pooled" and loaded.model.feature_kind == "pooled"
    batch = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.model(batch).flat(), model.eval()(batch).flat())


# ---------------------------------------------------------------- the whole command

def test_train_with_image_pca_then_predict_from_images_matches_the_in_run_evaluation(tmp_path):
    torch.set_num_threads(1)
    entry = load_entry("simulgen_entry_image_pca")
    data_dir = tmp_path / "data"
    condition = tiny_condition(data_dir, epochs=2, lc_epochs=6, extra="image_size\t16\nimage_pca_components\t6\n")
    condition = condition.replace("input_type\tcsvs", "input_type\timage").replace(
        f"param_dir\t{data_dir}/params.csv", f"param_dir\t{data_dir}/images")
    (tmp_path / "preset.txt").write_text(tiny_preset())
    (tmp_path / "condition.txt").write_text(condition)
    out = tmp_path / "out"
    assert entry.main(["--preset-file", str(tmp_path / "preset.txt"), "--condition", str(tmp_path / "condition.txt"),
                       "--device", "cpu", "--quiet", "--out", str(out)]) == 0

    report = json.loads((out / "report.json").read_text())["conditioner"]
    assert report["architecture"] == "mlp" and report["input_type"] == "image"
    assert report["image_pca_components"] == 6 and 0 < report["image_pca_variance_explained"] <= 1
    bundle = load_state(out / "latent_conditioner.pt")  # weights_only=True
    assert bundle["image_pca"]["components"].shape == (6, 16 * 16)
    assert bundle["model"]["input_layer.0.weight"].shape[1] == 6

    val_indices = np.load(out / "latent_vectors.npz")["val_indices"]
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    for index in val_indices:  # keep the names: natural order = case order
        name = f"case_{index + 1:04d}.png"
        shutil.copy(data_dir / "images" / name, held_out / name)
    target = tmp_path / "pred.npy"
    assert entry.main(["predict", "--model", str(out), "--images", str(held_out), "--out", str(target),
                       "--device", "cpu"]) == 0
    prediction = np.load(target)
    truth = np.load(data_dir / "dataset1.npy")[val_indices]
    errors = relative_l2_per_case(truth.reshape(prediction.shape), prediction)
    in_run = report["prediction_relative_l2"]["conditioner"]["val"]
    for name, value in (("mean", errors.mean()), ("median", np.median(errors)), ("max", errors.max())):
        assert value == pytest.approx(in_run[name], rel=1e-4), name


def test_a_keypoint_bundle_written_before_gray_levels_existed_loads_its_cnn_as_it_was(tmp_path):
    cfg = ConditionerConfig(input_type="image", filters=(8, 8), image_gray_levels=0)
    torch.manual_seed(0)
    model = build_conditioner(cfg, latent_dim_main=4, latent_dim_hier=2, num_hier_levels=1)
    loaded = load_older_image_bundle(tmp_path, cfg, model, without=("image_gray_levels",))
    assert loaded.config.image_gray_levels == 0 and loaded.model.gray_geometry is None
    assert loaded.model.feature_kind == "keypoints"
    batch = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.model(batch).flat(), model.eval()(batch).flat())
