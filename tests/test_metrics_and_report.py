import errno
import json
import math
import os

import numpy as np
import pytest

from modules.storage import atomic_files
from modules.evaluation import metrics, report
from modules.errors import DataError, SimulGenError
from modules.evaluation.metrics import relative_l2_per_case, summarize_errors
from modules.evaluation.report import ensemble_note, format_report_table, write_report


def test_relative_l2_hand_computed():
    truth = np.array([[[3.0, 0.0], [0.0, 4.0]],      # norm 5
                      [[1.0, 1.0], [1.0, 1.0]]], dtype=np.float32)  # norm 2
    prediction = np.array([[[3.0, 1.0], [0.0, 4.0]],  # error norm 1
                           [[2.0, 1.0], [1.0, 0.0]]], dtype=np.float32)  # error norm sqrt(2)
    errors = relative_l2_per_case(truth, prediction)
    assert errors.shape == (2,)
    assert errors.dtype == np.float64
    np.testing.assert_allclose(errors, [1.0 / 5.0, math.sqrt(2.0) / 2.0])


def test_relative_l2_zero_truth_uses_absolute_error():
    truth = np.zeros((2, 2, 2))
    prediction = np.zeros((2, 2, 2))
    prediction[1, 0, 0] = 3.0
    prediction[1, 1, 1] = 4.0
    errors = relative_l2_per_case(truth, prediction)
    assert np.all(np.isfinite(errors))
    np.testing.assert_allclose(errors, [0.0, 5.0])


def test_relative_l2_rejects_shape_mismatch_and_nan():
    with pytest.raises(DataError, match=r"truth has shape \(2, 3, 4\) but prediction has shape \(2, 3, 5\)"):
        relative_l2_per_case(np.ones((2, 3, 4)), np.ones((2, 3, 5)))
    prediction = np.ones((3, 2, 2))
    prediction[2, 1, 0] = np.nan
    with pytest.raises(DataError, match="prediction of case position 2 contains NaN"):
        relative_l2_per_case(np.ones((3, 2, 2)), prediction)


def test_summarize_errors_values_and_json():
    summary = summarize_errors(np.array([0.05, 0.01, 0.30, 0.02]))
    assert set(summary) == set(metrics.SUMMARY_KEYS)
    assert summary["count"] == 4
    assert summary["mean"] == pytest.approx(0.095)
    assert summary["median"] == pytest.approx(0.035)
    assert summary["max"] == pytest.approx(0.30)
    assert summary["min"] == pytest.approx(0.01)
    assert summary["argmax"] == 2
    # Even count: 0.02 and 0.05 are equally close to the median 0.035; the lower-ranked one (position 3) wins.
    assert summary["argmedian"] == 3
    assert all(type(summary[key]) is float for key in ("mean", "median", "max", "min"))
    assert all(type(summary[key]) is int for key in ("count", "argmax", "argmedian"))
    assert json.loads(json.dumps(summary)) == summary


def test_summarize_errors_odd_count_argmedian_is_the_median_case():
    summary = summarize_errors(np.array([0.4, 0.1, 0.2]))
    assert summary["median"] == pytest.approx(0.2)
    assert summary["argmedian"] == 2


def test_summarize_errors_rejects_empty_and_nan():
    with pytest.raises(DataError, match="non-empty 1-D"):
        summarize_errors(np.array([]))
    with pytest.raises(DataError, match=r"positions \[1\] are NaN"):
        summarize_errors(np.array([0.1, np.nan]))


def test_format_report_table_contains_names_and_percentages():
    table = format_report_table([
        ("SimulGenVAE", "validation", {"pooled": 0.03, "mean": 0.0321, "median": 0.029, "max": 0.10016}),
        ("PCA", "train", {"mean": 0.5, "median": 0.25, "max": 1.0}),
    ])
    lines = table.splitlines()
    assert lines[0].split() == ["model", "split", "pooled", "mean", "median", "max"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["SimulGenVAE", "validation", "3.00", "%", "3.21", "%", "2.90", "%", "10.02", "%"]
    assert lines[3].split() == ["PCA", "train", "-", "50.00", "%", "25.00", "%", "100.00", "%"]
    # Fixed width: the percent signs of every row line up.
    assert len({len(line) for line in lines[2:]}) == 1
    assert table.endswith("\n")


def test_write_report_writes_json_and_text(tmp_path):
    path_json, path_text = tmp_path / "out" / "report.json", tmp_path / "out" / "report.txt"
    contents = {"vae": {"validation": summarize_errors(np.array([0.1, 0.2]))}, "count": np.int64(2)}
    write_report(path_json, path_text, contents, "table")
    loaded = json.loads(path_json.read_text())
    assert loaded["vae"]["validation"]["mean"] == pytest.approx(0.15)
    assert loaded["count"] == 2
    assert path_json.read_text().startswith('{\n  "vae"')  # indent 2
    assert path_text.read_text() == "table\n"
    assert sorted(p.name for p in path_json.parent.iterdir()) == ["report.json", "report.txt"]


def _leftover_temp_files(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_write_report_disk_full_on_replace_keeps_old_file(tmp_path, monkeypatch):
    path_json, path_text = tmp_path / "report.json", tmp_path / "report.txt"
    path_json.write_text("old json")
    path_text.write_text("old text")

    def full_disk(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_files.os, "replace", full_disk)
    with pytest.raises(SimulGenError, match=r"could not write report file .*report\.json: disk full"):
        write_report(path_json, path_text, {"mean": 0.1}, "new table")
    assert path_json.read_text() == "old json"
    assert path_text.read_text() == "old text"
    assert _leftover_temp_files(tmp_path) == []


def test_write_report_disk_full_during_write_keeps_old_file(tmp_path, monkeypatch):
    path_json, path_text = tmp_path / "report.json", tmp_path / "report.txt"
    path_json.write_text("old json")
    real_fsync = os.fsync

    def failing_fsync(descriptor):
        real_fsync(descriptor)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_files.os, "fsync", failing_fsync)
    with pytest.raises(SimulGenError, match="report.json: disk full .*previous file, if any, is unchanged"):
        write_report(path_json, path_text, {"mean": 0.1}, "new table")
    assert path_json.read_text() == "old json"
    assert not path_text.exists()
    assert _leftover_temp_files(tmp_path) == []


def test_write_report_rejects_nan_before_touching_disk(tmp_path):
    path_json = tmp_path / "report.json"
    path_json.write_text("old json")
    with pytest.raises(SimulGenError, match="not valid JSON"):
        write_report(path_json, tmp_path / "report.txt", {"mean": float("nan")}, "table")
    assert path_json.read_text() == "old json"
    assert not (tmp_path / "report.txt").exists()


def test_pooled_error_weighs_cases_by_their_norm_and_per_case_errors_come_back():
    truth = np.stack([np.full((2, 3), 10.0), np.full((2, 3), 1.0)])
    prediction = truth.copy()
    prediction[0] += 1.0  # 10 % off on the large case
    prediction[1] += 0.5  # 50 % off on the small one
    norms = metrics.squared_norms(truth, prediction)
    np.testing.assert_allclose(norms, [[6.0, 600.0], [1.5, 6.0]])
    np.testing.assert_allclose(metrics.relative_from_norms(norms), relative_l2_per_case(truth, prediction))
    # ||X - X_hat||_F / ||X||_F: sqrt(7.5 / 606), far nearer the large case's 10 % than the mean (30 %)
    assert metrics.pooled_relative_l2(norms) == pytest.approx(math.sqrt(7.5 / 606))
    assert summarize_errors(np.array([0.1, 0.5]), pooled=0.11)["pooled"] == 0.11
    np.testing.assert_allclose(metrics.relative_from_norms(np.array([[4.0, 0.0]])), [2.0])  # zero truth: absolute


def test_the_run_report_names_the_kept_epoch_and_the_band_coverage():
    summary = summarize_errors(np.array([0.1, 0.2]), pooled=0.15)
    run = {"vae": {"latent_numbers": 6, "pca_components": 6, "training": {"best_epoch": 37, "epochs_run": 50},
                   "relative_l2": {"vae": {"val": summary}, "pca": {"val": summary}}},
           "conditioner": {"architecture": "mlp", "end_to_end": True, "input_type": "csv", "pod_gp_modes": 6,
                           "training": {"best_epoch": 0, "epochs_run": 9},
                           "prediction_relative_l2": {"conditioner": {"val": summary}, "pod_gp": {"val": summary},
                                                      "nearest_neighbour": {"val": summary}},
                           "band": {"nominal": 0.9, "scale": 1.7, "calibrated_on": "the 4 validation cases",
                                    "coverage": {"val": 0.9, "test": 0.825}}}}
    text = report.format_run_report(run)
    assert "VAE (6 latent numbers, epoch 37 of 50)  val" in text
    run["vae"]["training"].update(epochs_planned=50, epochs_configured=500)
    assert "VAE (6 latent numbers, epoch 37 of 50 (the time budget kept 50 of 500 epochs))  val" in \
        report.format_run_report(run)
    run["vae"]["training"].update(epochs_planned=500)
    assert "VAE (6 latent numbers, epoch 37 of 50)  val" in report.format_run_report(run)  # ended, not cut
    run["vae"]["training"].update(stopped_early=True)
    assert "VAE (6 latent numbers, epoch 37 of 50 (stopped early: no better in its last 13 epochs))  val" in \
        report.format_run_report(run)
    assert "MLP conditioner + decoder (end-to-end, untrained start kept)" in text
    assert "measured coverage: val 90.0%, test 82.5%" in text
    assert "the design's width" not in text  # a band without a design spread (images, older runs)
    run["conditioner"]["band"]["design_spread"] = True
    assert "std x the design's width (a Gaussian process's posterior std), calibrated" in \
        report.format_run_report(run)
    run["conditioner"].update(prediction_decoder="fresh", on_design_prior=True,
                              training={"best_epoch": 6, "epochs_run": 9})
    assert "MLP conditioner + decoder (end-to-end, own decoder, epoch 6 of 9)  val" in report.format_run_report(run)


def test_the_training_fit_is_measured_on_spread_cases_and_the_report_says_so():
    from types import SimpleNamespace
    from modules.evaluation.report import format_run_report
    from modules.evaluation.vae_evaluation import TRAIN_FIT_CASES, measured_splits
    sweep = SimpleNamespace(train_indices=np.arange(3, 303), val_indices=np.arange(303, 340),
                            test_indices=np.arange(340, 380))
    splits = measured_splits(sweep)
    assert len(splits["train"]) == TRAIN_FIT_CASES and splits["train"][0] == 3 and splits["train"][-1] == 302
    assert len(set(splits["train"])) == TRAIN_FIT_CASES
    assert np.array_equal(splits["val"], sweep.val_indices) and np.array_equal(splits["test"], sweep.test_indices)
    few = SimpleNamespace(train_indices=np.arange(10), val_indices=np.arange(10, 12), test_indices=np.arange(0))
    assert np.array_equal(measured_splits(few)["train"], few.train_indices) and "test" not in measured_splits(few)
    summary = {"count": 64, "pooled": 0.1, "mean": 0.1, "median": 0.1, "max": 0.2, "min": 0.05, "argmax": 0,
               "argmedian": 0}
    vae = {"latent_numbers": 28, "pca_components": 28, "train_cases": 300,
           "relative_l2": {"vae": {"train": summary}, "pca": {"train": summary}}}
    assert "train: 64 evenly spread training cases of 300" in format_run_report({"vae": vae})
    vae["train_cases"] = 64
    assert "evenly spread" not in format_run_report({"vae": vae})


@pytest.mark.parametrize("kept, trained, configured, expected", [
    (1, 1, 1, []),
    (1, 3, 3, ["best of 3 trained"]),
    (2, 3, 3, ["mean of 2 of 3 trained"]),
    (1, 1, 2, ["1 of 2 members trained: the time budget"]),
    (2, 2, 3, ["mean of 2", "2 of 3 members trained: the time budget"]),
])
def test_the_report_names_the_members_kept_trained_and_left_out_by_the_budget(kept, trained, configured, expected):
    assert ensemble_note(kept, trained, configured) == expected
