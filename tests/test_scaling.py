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


# ----------------------------------------------------------------------------- robust scaling

def robust_data(**overrides) -> DataConfig:
    values = dict(num_cases=7, num_timesteps=5, num_nodes=4, scaler="robust", robust_clip=3.0)
    values.update(overrides)
    return DataConfig(**values)


def test_robust_bounds_are_median_and_mad_of_the_training_cases_and_clip_beyond():
    array = make_sweep()
    array[1, :, 0] = 1e6  # validation cases: never seen by the fit
    array[0, 2, 0] = 50.0  # a spike in a training case: moves neither median nor MAD much
    data = robust_data()
    scaler = NodeScaler()
    fitted = scaler.fit_robust(array, TRAIN, data)
    values = array[TRAIN].reshape(-1, 4).astype(np.float64)
    median = np.median(values, axis=0)
    mad = np.median(np.abs(values - median), axis=0)
    np.testing.assert_allclose(scaler.data_max[:3], median[:3] + 3.0 * 1.4826 * mad[:3], rtol=1e-6)
    np.testing.assert_allclose(scaler.data_min[:3], median[:3] - 3.0 * 1.4826 * mad[:3], rtol=1e-6)
    assert fitted.timesteps_per_case == 5 and fitted.mad_fallbacks == 1  # the constant node 3
    assert scaler.data_min[3] == scaler.data_max[3] == 2.5
    scaled = scaler.transform(array[[0]])
    assert scaled[0, 2, 0] == pytest.approx(0.7) and np.abs(scaled).max() <= 0.7 + 1e-7  # the spike clipped
    assert scaler.transform(torch.as_tensor(array[[0]])).max() <= 0.7 + 1e-7
    assert scaler.inverse(scaled)[0, 2, 0] == pytest.approx(scaler.data_max[0])  # what clipping leaves of it
    assert NodeScaler().fit(array, TRAIN, DATA).transform(array[[0]])[0, 2, 0] == pytest.approx(0.7)  # min-max: the top


def test_a_node_whose_mad_is_0_is_scaled_by_its_range_not_clipped_away():
    array = np.zeros((7, 5, 2), dtype=np.float32)
    array[TRAIN[:2], 2, 0] = [4.0, -2.0]  # node 0 is 0 on most of its values: its MAD is 0
    array[..., 1] = np.arange(35, dtype=np.float32).reshape(7, 5)
    scaler = NodeScaler()
    scaler.fit_robust(array, TRAIN, robust_data(num_nodes=2))
    assert (scaler.data_min[0], scaler.data_max[0]) == (-2.0, 4.0)
    np.testing.assert_allclose(scaler.inverse(scaler.transform(array[TRAIN]))[..., 0], array[TRAIN][..., 0], atol=1e-6)


def test_above_its_memory_budget_the_robust_fit_samples_spread_timesteps_of_every_case(monkeypatch):
    from modules.runtime import memory

    array = make_sweep()
    exact = NodeScaler()
    exact.fit_robust(array, TRAIN, robust_data())
    monkeypatch.setattr(memory, "ROBUST_FIT_BYTES", 4 * 4 * 10)  # 10 rows of 4 channels: 2 timesteps per case
    sampled = NodeScaler()
    fitted = sampled.fit_robust(array, TRAIN, robust_data())
    assert fitted.timesteps_per_case == 2
    values = array[TRAIN][:, [0, 4]].reshape(-1, 4).astype(np.float64)  # the first and last step of each case
    median = np.median(values, axis=0)
    np.testing.assert_allclose((sampled.data_max + sampled.data_min)[:3] / 2, median[:3], rtol=1e-6)
    assert not np.allclose(sampled.data_max, exact.data_max)


def test_the_robust_scaler_survives_its_state_dict_and_older_files_stay_min_max():
    scaler = NodeScaler()
    scaler.fit_robust(make_sweep(), TRAIN, robust_data())
    restored = NodeScaler.from_state_dict(scaler.state_dict())
    assert restored.clipped and np.array_equal(restored.data_max, scaler.data_max)
    older = {key: value for key, value in scaler.state_dict().items() if key != "clipped"}
    assert not NodeScaler.from_state_dict(older).clipped


def test_the_run_fits_the_scaler_condition_txt_names():
    from modules.data.prepared_sweep import fit_shared_scaler

    array = make_sweep()
    assert fit_shared_scaler(array, np.array(TRAIN), robust_data(), None).clipped
    minmax = fit_shared_scaler(array, np.array(TRAIN), DATA, None)
    assert not minmax.clipped and np.array_equal(minmax.data_max, array[TRAIN].max(axis=(0, 1)))
