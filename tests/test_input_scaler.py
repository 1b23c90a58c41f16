"""Standardising design inputs with training statistics, and saving the scaler."""
import numpy as np
import pytest
import torch

from modules.data.input_scaler import InputScaler
from modules.errors import CheckpointError, DataError


def test_scaler_fits_training_rows_only():
    x = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [100.0, -7.0, 9.0]])
    scaler = InputScaler().fit(x, train_indices=[0, 1])
    np.testing.assert_allclose(scaler.mean.numpy(), [2.0, 5.0, 3.0])
    np.testing.assert_allclose(scaler.std.numpy(), [1.0, 1.0, 1.0])  # middle column constant -> std 1
    changed = x.copy()
    changed[2] = [-1e6, 1e6, 0.0]
    other = InputScaler().fit(changed, train_indices=[0, 1])
    assert torch.equal(scaler.mean, other.mean) and torch.equal(scaler.std, other.std)
    np.testing.assert_allclose(scaler.transform(x[:2]), [[-1.0, 0.0, -1.0], [1.0, 0.0, 1.0]])


def test_scaler_population_std_and_near_constant_column():
    x = np.array([[0.1, 0.0], [0.1, 2.0], [0.1, 4.0]])
    scaler = InputScaler().fit(x, train_indices=[0, 1, 2])
    np.testing.assert_allclose(scaler.std.numpy(), [1.0, np.sqrt(8 / 3)])


def test_scaler_round_trip_numpy_and_tensor():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(6, 4))
    scaler = InputScaler().fit(x, train_indices=[0, 2, 3, 5])
    scaled = scaler.transform(x)
    assert isinstance(scaled, np.ndarray) and scaled.dtype == np.float64
    np.testing.assert_allclose(scaled[[0, 2, 3, 5]].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(scaled[[0, 2, 3, 5]].std(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(scaler.inverse(scaled), x, atol=1e-12)
    tensor = torch.tensor(x, dtype=torch.float32)
    scaled_tensor = scaler.transform(tensor)
    assert isinstance(scaled_tensor, torch.Tensor) and scaled_tensor.dtype == torch.float32
    np.testing.assert_allclose(scaled_tensor.numpy(), scaled, atol=1e-5)
    torch.testing.assert_close(scaler.inverse(scaled_tensor), tensor)


def test_image_scaler_is_per_channel():
    images = np.zeros((3, 2, 2, 2), dtype=np.float32)
    images[0, 0], images[1, 0] = 0.2, 0.6  # channel 0: mean 0.4, std 0.2 over the two training cases
    images[:, 1] = 0.5                     # channel 1: constant -> std 1
    images[2] = 9.0                        # a validation case that must not count
    scaler = InputScaler().fit(images, train_indices=[0, 1])
    np.testing.assert_allclose(scaler.mean.numpy(), [0.4, 0.5], atol=1e-7)
    np.testing.assert_allclose(scaler.std.numpy(), [0.2, 1.0], atol=1e-7)
    scaled = scaler.transform(images)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled[0, 0], -1.0, atol=1e-6)
    np.testing.assert_allclose(scaler.transform(images[1]), scaled[1])  # a single [C, H, W] image
    np.testing.assert_allclose(scaler.inverse(scaled), images, atol=1e-6)
    with pytest.raises(DataError, match="fitted on 2-channel images"):
        scaler.transform(np.zeros((1, 3, 2, 2), dtype=np.float32))


def test_scaler_state_round_trip_through_torch_save(tmp_path):
    x = np.array([[1.0, 10.0], [2.0, 30.0], [4.0, 20.0]])
    scaler = InputScaler().fit(x, train_indices=[0, 1, 2])
    path = tmp_path / "scaler.pt"
    torch.save({"input_scaler": scaler.state_dict()}, path)
    state = torch.load(path, weights_only=True)["input_scaler"]
    restored = InputScaler.from_state_dict(state)
    assert restored.kind == "table"
    np.testing.assert_array_equal(restored.transform(x), scaler.transform(x))
    with pytest.raises(DataError, match="design input has 3 parameters, the scaler was fitted on 2"):
        restored.transform(np.zeros((1, 3)))


def test_damaged_scaler_state():
    with pytest.raises(CheckpointError, match="'std' must be positive"):
        InputScaler.from_state_dict({"kind": "table", "mean": torch.zeros(2), "std": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="'kind' must be one of table, image"):
        InputScaler.from_state_dict({"kind": "?", "mean": torch.zeros(2), "std": torch.ones(2)})
