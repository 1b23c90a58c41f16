import numpy as np
import pytest
import torch

from modules.config.schema import DataConfig
from modules.data.sweep_file import read_cases
from modules.errors import CheckpointError
from modules.data.scaling import NodeScaler


def make_sweep(seed=0):
    rng = np.random.default_rng(seed)
    array = rng.normal(size=(7, 5, 4)).astype(np.float32) * np.array([1.0, 10.0, 0.1, 1.0], dtype=np.float32)
    array[:, :, 3] = 2.5  # a constant node
    return array


DATA = DataConfig(num_cases=7, num_timesteps=5, num_nodes=4)
TRAIN = [0, 2, 3, 5, 6]


def test_hand_computed_values():
    cases = np.array([[[0.0, 10.0], [4.0, 30.0]]], dtype=np.float32)  # node 0 in [0, 4], node 1 in [10, 30]
    scaled = NodeScaler().fit_arrays(cases).transform(np.array([[0.0, 10.0], [2.0, 30.0], [4.0, 20.0]]))
    np.testing.assert_allclose(scaled, [[-0.7, -0.7], [0.0, 0.7], [0.7, 0.0]], atol=1e-12)


def test_streamed_fit_equals_in_memory_fit():
    array = make_sweep()
    streamed = NodeScaler().fit(array, TRAIN, DATA, chunk_cases=2)
    in_memory = NodeScaler().fit_arrays(array[TRAIN])
    np.testing.assert_array_equal(streamed.data_min, in_memory.data_min)
    np.testing.assert_array_equal(streamed.data_max, in_memory.data_max)


def test_fit_uses_window_and_ignores_validation_cases():
    array = make_sweep()
    array[1, 0, 0] = 1000.0  # case 1 is a validation case
    array[4, 2, 1] = -1000.0  # so is case 4
    data = DataConfig(num_cases=7, num_timesteps=5, num_nodes=4, num_timesteps_used=4, node_start=1)
    array[0, 4, 1] = 500.0  # timestep 4 is outside the window
    scaler = NodeScaler().fit(array, TRAIN, data, chunk_cases=3)
    assert scaler.num_nodes == 3
    window = array[TRAIN, :4, 1:]
    np.testing.assert_array_equal(scaler.data_min, window.min(axis=(0, 1)))
    np.testing.assert_array_equal(scaler.data_max, window.max(axis=(0, 1)))
    assert scaler.data_max.max() < 500.0 and scaler.data_min.min() > -1000.0


def test_training_data_within_range_and_round_trip_numpy():
    array = make_sweep()
    scaler = NodeScaler().fit(array, TRAIN, DATA)
    train = read_cases(array, TRAIN, DATA)
    scaled = scaler.transform(train)
    assert scaled.dtype == np.float32 and scaled.shape == train.shape
    assert scaled.min() >= -0.7 and scaled.max() <= 0.7
    assert np.isclose(scaled[..., 0].min(), -0.7) and np.isclose(scaled[..., 0].max(), 0.7)
    np.testing.assert_allclose(scaler.inverse(scaled), train, rtol=1e-5, atol=1e-5)


def test_round_trip_torch_and_node_axis():
    array = make_sweep()
    scaler = NodeScaler().fit(array, TRAIN, DATA)
    validation = torch.from_numpy(read_cases(array, [1, 4], DATA))
    scaled = scaler.transform(validation)
    assert isinstance(scaled, torch.Tensor) and scaled.dtype == torch.float32
    torch.testing.assert_close(scaler.inverse(scaled), validation, rtol=1e-5, atol=1e-5)
    # VAE layout [batch, nodes, timesteps] gives the same numbers with node_axis=-2.
    nodes_first = scaler.transform(validation.transpose(1, 2), node_axis=-2)
    torch.testing.assert_close(nodes_first, scaled.transpose(1, 2))
    np.testing.assert_allclose(scaled.numpy(), scaler.transform(validation.numpy()), atol=1e-6)


def test_constant_node_maps_to_zero_and_back_exactly():
    array = make_sweep()
    scaler = NodeScaler().fit(array, TRAIN, DATA)
    scaled = scaler.transform(array)
    assert np.all(np.isfinite(scaled))
    assert np.all(scaled[..., 3] == 0.0)
    assert np.all(scaler.inverse(scaled)[..., 3] == np.float32(2.5))
    assert torch.all(scaler.inverse(torch.from_numpy(scaled))[..., 3] == 2.5)


def test_state_dict_survives_weights_only_load(tmp_path):
    scaler = NodeScaler().fit(make_sweep(), TRAIN, DATA)
    torch.save({"scaler": scaler.state_dict()}, tmp_path / "ckpt.pt")
    loaded = NodeScaler.from_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["scaler"])
    x = make_sweep(seed=1)
    np.testing.assert_array_equal(loaded.transform(x), scaler.transform(x))
    with pytest.raises(CheckpointError, match="lacks data_max"):
        NodeScaler.from_state_dict({"data_min": torch.zeros(4), "scaled_limit": 0.7})


def test_wrong_node_count_and_unfitted_are_errors():
    scaler = NodeScaler()
    with pytest.raises(RuntimeError, match="not fitted"):
        scaler.transform(np.zeros((2, 4)))
    scaler.fit_arrays(make_sweep())
    with pytest.raises(ValueError, match="fitted on 4 nodes but axis -1 of the input has 3"):
        scaler.transform(np.zeros((2, 3)))
