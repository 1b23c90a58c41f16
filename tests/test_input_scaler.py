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


def test_log_columns_are_standardised_as_logarithms_and_restored_by_the_inverse():
    x = np.array([[1.0, 1e-5], [2.0, 1e-4], [3.0, 1e-3], [4.0, 5e-3]])
    scaler = InputScaler().fit(x, train_indices=[0, 1, 2], log_columns=[1])
    logged = np.log(x[:3, 1])
    np.testing.assert_allclose(scaler.mean.numpy(), [2.0, logged.mean()])
    np.testing.assert_allclose(scaler.transform(x)[:, 1], (np.log(x[:, 1]) - logged.mean()) / logged.std())
    np.testing.assert_allclose(scaler.transform(x)[:, 0], (x[:, 0] - 2.0) / np.std([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(scaler.inverse(scaler.transform(x)), x, rtol=1e-12)
    as_tensor = scaler.transform(torch.as_tensor(x, dtype=torch.float32))
    assert as_tensor.dtype == torch.float32
    np.testing.assert_allclose(as_tensor.numpy(), scaler.transform(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scaler.transform(x[3]), scaler.transform(x)[3])  # one design [p]


def test_a_design_without_a_logarithm_is_refused_with_its_row_and_parameter():
    x = np.array([[1.0, 1e-5], [2.0, 1e-4], [3.0, 1e-3]])
    scaler = InputScaler().fit(x, train_indices=[0, 1, 2], log_columns=[1])
    with pytest.raises(DataError, match=r"design 2: parameter 2 is -0.5, but the model reads that parameter as its "
                                        r"logarithm \(log_parameters\)"):
        scaler.transform(np.array([[1.0, 1e-4], [2.0, -0.5]]))
    with pytest.raises(DataError, match="design 1: parameter 2 is 0"):
        scaler.transform(torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="parameter tables only"):
        InputScaler().fit(np.ones((2, 1, 2, 2)), [0, 1], log_columns=[0])


def test_log_columns_survive_the_saved_state_and_older_states_read_every_column_linearly(tmp_path):
    x = np.array([[1.0, 1e-5], [2.0, 1e-4], [3.0, 1e-3]])
    scaler = InputScaler().fit(x, train_indices=[0, 1, 2], log_columns=[1])
    path = tmp_path / "scaler.pt"
    torch.save({"input_scaler": scaler.state_dict()}, path)
    restored = InputScaler.from_state_dict(torch.load(path, weights_only=True)["input_scaler"])
    assert restored.log_columns == (1,)
    np.testing.assert_array_equal(restored.transform(x), scaler.transform(x))
    older = {key: value for key, value in scaler.state_dict().items() if key != "log_columns"}
    assert InputScaler.from_state_dict(older).log_columns == ()
    for damaged in (torch.tensor([2]), torch.tensor([0.5]), torch.tensor([[1]])):
        with pytest.raises(CheckpointError, match="'log_columns' must be a 1-D integer tensor"):
            InputScaler.from_state_dict(dict(scaler.state_dict(), log_columns=damaged))
