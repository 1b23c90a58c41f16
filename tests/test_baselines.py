import numpy as np
import pytest

from modules.evaluation.baselines import NearestNeighbourBaseline, PCABaseline, PODGaussianProcessBaseline
from modules.errors import DataError
from modules.evaluation.metrics import relative_l2_per_case

NUM_TIMESTEPS, NUM_NODES = 4, 6


def random_fields(num_cases, seed=0):
    return np.random.default_rng(seed).normal(size=(num_cases, NUM_TIMESTEPS, NUM_NODES)).astype(np.float32)


def low_rank_fields(num_cases, rank=3, seed=0):
    """Fields = mean + a `rank`-dimensional family, so `rank` components represent every member exactly."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, NUM_TIMESTEPS, NUM_NODES))
    mean = rng.normal(size=(NUM_TIMESTEPS, NUM_NODES))

    def draw(count):
        return (mean + np.einsum("mr,rtn->mtn", rng.normal(size=(count, rank)), basis)).astype(np.float32)
    return draw(num_cases), draw(5)


def test_pca_with_as_many_components_as_cases_reconstructs_training_cases():
    train = random_fields(6)
    baseline = PCABaseline().fit(train, num_components=6)
    reconstruction = baseline.reconstruct(train)
    assert reconstruction.shape == train.shape
    assert reconstruction.dtype == np.float32
    np.testing.assert_allclose(reconstruction, train, atol=1e-5)


def test_pca_reconstructs_held_out_combination_of_training_cases_exactly():
    train = random_fields(6)
    # PCA centres on the training mean, so its span is the affine hull: coefficients must sum to 1.
    coefficients = np.array([0.7, -0.4, 0.2, 0.9, -0.6, 0.2])
    held_out = np.einsum("k,ktn->tn", coefficients, train.astype(np.float64))[None]
    baseline = PCABaseline().fit(train, num_components=6)
    np.testing.assert_allclose(baseline.reconstruct(held_out), held_out, atol=1e-5)
    # A field outside that span is not reproduced, so the check above is not vacuous.
    outside = random_fields(1, seed=7)
    assert relative_l2_per_case(outside, baseline.reconstruct(outside))[0] > 0.1


def test_pca_fewer_components_loses_information():
    train = random_fields(6)
    baseline = PCABaseline().fit(train, num_components=2)
    assert baseline.encode(train).shape == (6, 2)
    assert np.abs(baseline.reconstruct(train) - train).max() > 0.1


def test_pca_effective_component_count_is_clipped():
    train = random_fields(5)  # 5 cases, 4 * 6 = 24 values per case
    baseline = PCABaseline().fit(train, num_components=50)
    assert baseline.requested_components == 50
    assert baseline.num_components == 5
    wide = np.random.default_rng(1).normal(size=(30, 2, 3))  # 30 cases but only 6 values per case
    assert PCABaseline().fit(wide, num_components=20).num_components == 6


def test_pca_rejects_bad_requests():
    with pytest.raises(DataError, match="num_components must be at least 1, got 0"):
        PCABaseline().fit(random_fields(4), num_components=0)
    with pytest.raises(DataError, match="needs at least 2 training cases"):
        PCABaseline().fit(random_fields(1), num_components=1)
    baseline = PCABaseline().fit(random_fields(4), num_components=2)
    with pytest.raises(DataError, match=r"fitted on \(4, 6\)"):
        baseline.reconstruct(np.zeros((1, 4, 5)))


def smooth_fields(design):
    """A field family that depends smoothly and non-linearly on two inputs (a, b)."""
    time = np.linspace(0.0, 1.0, NUM_TIMESTEPS)[:, None]
    space = np.linspace(0.0, 1.0, NUM_NODES)[None, :]
    shapes = [np.sin(np.pi * space) * np.ones_like(time), np.sin(2 * np.pi * space) * time,
              np.cos(np.pi * space) * time ** 2]
    return np.stack([(1.0 + a) * shapes[0] + np.sin(2 * a + b) * shapes[1] + a * b * shapes[2]
                     for a, b in design]).astype(np.float32)


def test_pod_gp_beats_nearest_neighbour_on_held_out_designs():
    rng = np.random.default_rng(0)
    train_design = rng.uniform(0.0, 1.0, size=(30, 2))
    test_design = rng.uniform(0.1, 0.9, size=(10, 2))
    train_fields, test_fields = smooth_fields(train_design), smooth_fields(test_design)

    pod_gp = PODGaussianProcessBaseline(random_state=0).fit(train_design, train_fields, num_modes=3)
    gp_prediction = pod_gp.predict(test_design)
    assert gp_prediction.shape == test_fields.shape
    nearest = NearestNeighbourBaseline().fit(train_design, train_fields)
    gp_error = relative_l2_per_case(test_fields, gp_prediction).mean()
    nn_error = relative_l2_per_case(test_fields, nearest.predict(test_design)).mean()
    assert gp_error < nn_error
    assert gp_error < 0.05
    assert all(isinstance(message, str) for message in pod_gp.fit_warnings)


def test_pod_gp_is_reproducible_and_accepts_flattened_images():
    rng = np.random.default_rng(3)
    images = rng.uniform(size=(8, 3, 3))  # the caller flattens images to one feature row per case
    features = images.reshape(8, -1)
    fields = smooth_fields(features[:, :2])
    first = PODGaussianProcessBaseline(random_state=5).fit(features, fields, num_modes=4).predict(features[:3])
    second = PODGaussianProcessBaseline(random_state=5).fit(features, fields, num_modes=4).predict(features[:3])
    np.testing.assert_array_equal(first, second)
    with pytest.raises(DataError, match="flatten image inputs"):
        PODGaussianProcessBaseline().fit(images, fields, num_modes=2)


def test_pod_gp_rejects_mismatched_inputs():
    design = np.random.default_rng(0).uniform(size=(6, 2))
    with pytest.raises(DataError, match="5 design rows but 6 fields"):
        PODGaussianProcessBaseline().fit(design[:5], smooth_fields(design), num_modes=2)
    fitted = PODGaussianProcessBaseline().fit(design, smooth_fields(design), num_modes=2)
    with pytest.raises(DataError, match="have 3 features, the baseline was fitted on 2"):
        fitted.predict(np.zeros((1, 3)))


def test_nearest_neighbour_returns_training_field_for_training_input():
    rng = np.random.default_rng(2)
    design = rng.uniform(size=(7, 3))
    fields = random_fields(7)
    nearest = NearestNeighbourBaseline().fit(design, fields)
    prediction = nearest.predict(design[[4, 0, 4]])
    np.testing.assert_array_equal(prediction, fields[[4, 0, 4]])
    prediction[0] += 1.0  # a copy: editing a prediction must not change the stored training data
    np.testing.assert_array_equal(nearest.predict(design[[4]])[0], fields[4])


def test_nearest_neighbour_standardises_inputs():
    # Column 1 spans 1000x more than column 0; unscaled distance would ignore column 0 entirely.
    design = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1000.0], [1.0, 1000.0]])
    nearest = NearestNeighbourBaseline().fit(design, random_fields(4))
    assert nearest.nearest_indices(np.array([[0.9, 100.0]])).tolist() == [1]


def test_pod_gp_fits_one_process_per_mode_with_its_own_length_scales():
    from modules.evaluation.baselines import PODGaussianProcessBaseline

    rng = np.random.default_rng(0)
    design = rng.uniform(-1, 1, size=(40, 2))
    pattern_a, pattern_b = rng.normal(size=(2, 3, 5))
    # mode along pattern_a varies fast with input 0 only; mode along pattern_b slowly with input 1 only
    fields = (np.sin(4 * design[:, 0])[:, None, None] * 5 * pattern_a
              + design[:, 1][:, None, None] * pattern_b)
    baseline = PODGaussianProcessBaseline().fit(design, fields, 2)
    assert len(baseline.gaussian_processes) == 2
    scales = [process.kernel_.k1.k2.length_scale for process in baseline.gaussian_processes]
    assert not np.allclose(scales[0], scales[1], rtol=0.5)
