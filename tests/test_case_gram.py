"""The Gram-matrix baselines equal the in-memory ones, and the whole command gives the same report either way."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.evaluation import case_gram
from modules.evaluation import plots
from modules.runtime import memory
from modules.evaluation.baselines import NearestNeighbourBaseline, PCABaseline, PODGaussianProcessBaseline
from modules.evaluation.case_gram import GramPCA, accumulate_case_gram, nearest_relative_errors, pod_gp_relative_errors
from modules.config.schema import DataConfig
from modules.data.sweep_file import open_sweep
from modules.evaluation.metrics import relative_l2_per_case
from tiny_sweep import load_entry, tiny_condition, tiny_preset

NUM_CASES, NUM_TIMESTEPS, NUM_NODES = 10, 6, 9
TRAIN, VAL = np.array([0, 2, 3, 5, 6, 8, 9]), np.array([1, 4, 7])


def design_and_fields(seed: int = 0):
    """Designs [cases, 3] and fields [cases, T, N] that depend smoothly on them, with a large offset."""
    rng = np.random.default_rng(seed)
    designs = rng.uniform(-1, 1, size=(NUM_CASES, 3))
    modes = rng.normal(size=(3, NUM_TIMESTEPS, NUM_NODES))
    fields = 20.0 + np.einsum("cp,ptn->ctn", np.sin(2 * designs), modes)
    fields += 0.05 * rng.normal(size=fields.shape)
    return designs, fields.astype(np.float32)


def exact(fields: np.ndarray) -> np.ndarray:
    """float64 fields: the in-memory baselines then predict in float64 too, not rounded to float32 (which alone
    moves errors of ~1e-3 around a field of 20 by ~1e-5 relative)."""
    return fields.astype(np.float64)


def gram_of(tmp_path: Path, fields: np.ndarray, data: DataConfig, **blocks) -> case_gram.CaseGram:
    np.save(tmp_path / "sweep.npy", fields)
    return accumulate_case_gram(open_sweep(tmp_path / "sweep.npy"), data, TRAIN, **blocks)


def full_window() -> DataConfig:
    return DataConfig(num_cases=NUM_CASES, num_timesteps=NUM_TIMESTEPS, num_nodes=NUM_NODES)


@pytest.mark.parametrize("with_variable_axis", [False, True])
def test_gram_equals_direct_products_over_a_window_read_in_uneven_blocks(tmp_path, with_variable_axis):
    _, fields = design_and_fields()
    stored = np.stack([fields, fields[::-1] * 3], axis=-1) if with_variable_axis else fields
    # Dim2_red 5 of 6 timesteps, nodes [2, 8) of 9: 5 steps in blocks of 2, 2, 1; 12 columns in slices of 5.
    data = DataConfig(num_cases=NUM_CASES, num_timesteps=NUM_TIMESTEPS, num_nodes=NUM_NODES,
                      num_variables=2 if with_variable_axis else 1, num_timesteps_used=5, node_start=2, node_end=8)
    gram = gram_of(tmp_path, stored, data, block_bytes=2 * NUM_CASES * 6 * 4, column_bytes=5 * NUM_CASES * 8)
    window = stored[:, :5, 2:8].reshape(NUM_CASES, -1).astype(np.float64)  # every variable counts
    centred = window - window[TRAIN].mean(axis=0)
    np.testing.assert_allclose(gram.centred, centred @ centred.T, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(gram.squared_norms, (window ** 2).sum(axis=1), rtol=1e-12)
    assert gram.num_features == 5 * 6 * data.num_variables and np.array_equal(gram.train_indices, TRAIN)
    # One block per timestep or one for all: the same numbers up to round-off.
    whole = gram_of(tmp_path, stored, data)
    np.testing.assert_allclose(whole.centred, gram.centred, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("num_components", [1, 3, 6])
def test_pca_errors_equal_sklearn_pca_of_the_fields(tmp_path, num_components):
    _, fields = design_and_fields()
    gram = gram_of(tmp_path, fields, full_window())
    in_memory = PCABaseline().fit(exact(fields[TRAIN]), num_components)
    pca = GramPCA(gram, num_components)
    assert pca.num_components == in_memory.num_components == num_components
    for split in (TRAIN, VAL):
        expected = relative_l2_per_case(fields[split], in_memory.reconstruct(fields[split]))
        # atol: with 6 components the training cases are reproduced exactly, and an error^2 that is a difference
        # of Gram sums is 0 only to round-off, ~1e-17 ||x||^2, i.e. ~1e-9 after the square root.
        np.testing.assert_allclose(pca.relative_errors(split), expected, rtol=1e-6, atol=1e-7)
    assert pca.relative_errors(VAL).min() > 1e-4  # the held-out cases are not trivially reproduced


def test_pca_with_every_training_case_leaves_out_the_direction_without_variance(tmp_path):
    _, fields = design_and_fields()
    pca = GramPCA(gram_of(tmp_path, fields, full_window()), num_components=50)
    # 7 training cases: 7 components asked for, but centred they span only 6 directions.
    assert pca.num_components == 7 and pca.num_modes_with_variance == 6
    train_errors = pca.relative_errors(TRAIN)
    assert np.all(np.isfinite(train_errors)) and train_errors.max() < 1e-6  # clamped at 0, never NaN
    six = PCABaseline().fit(exact(fields[TRAIN]), 6)
    np.testing.assert_allclose(pca.relative_errors(VAL),
                               relative_l2_per_case(fields[VAL], six.reconstruct(fields[VAL])), rtol=1e-6)


def test_pod_gp_errors_equal_the_in_memory_baseline(tmp_path):
    designs, fields = design_and_fields()
    gram = gram_of(tmp_path, fields, full_window())
    in_memory = PODGaussianProcessBaseline().fit(designs[TRAIN], exact(fields[TRAIN]), 2)
    # Validation designs, and training designs (which the GP nearly interpolates) through the same fit.
    every_case = np.arange(NUM_CASES)
    expected = relative_l2_per_case(fields, in_memory.predict(designs))
    errors = pod_gp_relative_errors(GramPCA(gram, 2), designs, {"all": every_case, "val": VAL})
    np.testing.assert_allclose(errors["all"], expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(errors["val"], expected[VAL], rtol=1e-6, atol=1e-9)
    assert expected[VAL].min() > 1e-3


def test_nearest_neighbour_errors_equal_the_in_memory_baseline_and_a_zero_field_gives_the_absolute_error(tmp_path):
    designs, fields = design_and_fields()
    fields[VAL[1]] = 0.0  # ||x|| = 0: the relative error is undefined, both report ||x_hat||
    gram = gram_of(tmp_path, fields, full_window())
    in_memory = NearestNeighbourBaseline().fit(designs[TRAIN], fields[TRAIN])
    expected = relative_l2_per_case(fields[VAL], in_memory.predict(designs[VAL]))
    assert expected[1] > 1  # the absolute norm of a field around 20
    np.testing.assert_allclose(nearest_relative_errors(gram, designs, VAL), expected, rtol=1e-6)


def test_a_nearest_neighbour_fitted_on_designs_only_refuses_to_predict_fields():
    baseline = NearestNeighbourBaseline().fit_inputs(np.eye(3))
    assert baseline.nearest_indices(np.array([[0.0, 0.9, 0.1]])).tolist() == [1]
    with pytest.raises(RuntimeError, match="fit_inputs"):
        baseline.predict(np.eye(3))


def baseline_summaries(report: dict) -> dict:
    pca = report["vae"]["relative_l2"]["pca"]
    conditioner = report["conditioner"]["prediction_relative_l2"]
    return {"pca train": pca["train"], "pca val": pca["val"], "pod_gp val": conditioner["pod_gp"]["val"],
            "nearest val": conditioner["nearest_neighbour"]["val"]}


def test_the_command_reports_the_same_baselines_through_the_gram_path(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    entry = load_entry("simulgen_entry_case_gram")
    (tmp_path / "preset.txt").write_text(tiny_preset())
    (tmp_path / "condition.txt").write_text(tiny_condition(tmp_path / "data", epochs=1, lc_epochs=1))
    args = ["--preset-file", str(tmp_path / "preset.txt"), "--condition", str(tmp_path / "condition.txt"),
            "--device", "cpu", "--quiet"]
    assert entry.main(args + ["--out", str(tmp_path / "in_memory")]) == 0
    monkeypatch.setattr(memory, "IN_MEMORY_BASELINE_BYTES", 0)
    # The dual-view plots are the only users of the kept reconstructions: record what they are given
    # (their drawing is tested in test_plots.py).
    drawn = []
    monkeypatch.setattr(plots, "plot_dual_view", lambda truth, prediction, path, title, **kwargs:
                        drawn.append((truth, prediction, title, kwargs["relative_error"])))
    # Count the Gram's reads of the sweep (one block holds the whole tiny window) and the PCAs made from it.
    counts = {"blocks": 0, "pcas": 0}
    read_block, make_pca = case_gram.read_timestep_block, case_gram.GramPCA.__init__

    def counted_read(*args, **kwargs):
        counts["blocks"] += 1
        return read_block(*args, **kwargs)

    def counted_pca(self, *args, **kwargs):
        counts["pcas"] += 1
        make_pca(self, *args, **kwargs)

    monkeypatch.setattr(case_gram, "read_timestep_block", counted_read)
    monkeypatch.setattr(case_gram.GramPCA, "__init__", counted_pca)
    assert entry.main(args + ["--out", str(tmp_path / "gram"), "--plot=1"]) == 0
    assert counts == {"blocks": 1, "pcas": 2}  # one Gram, shared by the VAE's and the conditioner's baselines
    reports = [json.loads((tmp_path / name / "report.json").read_text()) for name in ("in_memory", "gram")]
    in_memory, gram = reports
    assert in_memory["vae"]["relative_l2"]["vae"] == gram["vae"]["relative_l2"]["vae"]
    assert in_memory["conditioner"]["prediction_relative_l2"]["conditioner"] == \
        gram["conditioner"]["prediction_relative_l2"]["conditioner"]
    assert gram["vae"]["pca_components"] == in_memory["vae"]["pca_components"] == 6
    assert gram["conditioner"]["pod_gp_modes"] == in_memory["conditioner"]["pod_gp_modes"] == 6
    expected, actual = baseline_summaries(in_memory), baseline_summaries(gram)
    for label in expected:
        for key in ("mean", "median", "max", "min"):
            assert actual[label][key] == pytest.approx(expected[label][key], rel=1e-5), (label, key)
        assert actual[label]["argmax"] == expected[label]["argmax"], label
    assert [title.split(",")[0] for _, _, title, _ in drawn] == ["VAE reconstruction"] * 2 + \
        ["Prediction from the design alone"] * 2
    worst = [gram["vae"]["relative_l2"]["vae"]["val"]["max"],
             gram["conditioner"]["prediction_relative_l2"]["conditioner"]["val"]["max"]]
    for (truth, prediction, title, error), worst_error in zip(drawn, [worst[0]] * 2 + [worst[1]] * 2):
        assert prediction.shape == truth.shape == (8, 64)
        # The kept field is the one whose error was reported for that case.
        assert relative_l2_per_case(truth[None], prediction[None])[0] == pytest.approx(error, rel=1e-6)
        assert ("worst" in title) == (error == pytest.approx(worst_error, rel=1e-9)), title
