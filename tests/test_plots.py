"""Tests for modules/plots.py: PNGs are written atomically, figures never leak, content is right."""
import math
import os
import re

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import TriMesh
from PIL import Image

from modules.evaluation import plots
from modules.errors import SimulGenError


@pytest.fixture(autouse=True)
def agg_backend():
    plots.configure_backend(False)


@pytest.fixture
def drawn(monkeypatch):
    """Every figure the plot functions close, so tests can read what was drawn."""
    figures = []
    real_close = plt.close

    def close(fig=None):
        figures.append(fig)
        real_close(fig)

    monkeypatch.setattr(plt, "close", close)
    return figures


def assert_png(result, path):
    """One non-blank PNG at `path`, no temp file beside it, and no figure left open."""
    assert result == path
    assert plt.get_fignums() == []
    assert os.listdir(path.parent) == [path.name]
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        gray = np.asarray(image.convert("L"))
    assert width > 0 and height > 0
    assert (gray < 250).mean() > 0.01  # something was drawn on the white page


def titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def field_pair(num_timesteps=11):
    """Five nodes whose variation grows with index (median at node 2); node 0 is predicted worst."""
    time = np.linspace(0.0, 1.0, num_timesteps)[:, None]
    truth = np.sin(2 * np.pi * time) * np.arange(1, 6)[None, :]
    prediction = truth.copy()
    prediction[:, 0] += 0.5
    prediction[:, 1:] += 0.01
    return truth, prediction


# ----------------------------------------------------------------------------- backend


def test_configure_backend_for_saving_selects_agg():
    plots.configure_backend(False)
    assert matplotlib.get_backend().lower() == "agg"


def test_configure_backend_for_showing_on_a_file_only_backend_raises():
    with pytest.raises(SimulGenError, match=r"(?is)backend 'agg' can only write files.*fix: use --plot=1"):
        plots.configure_backend(True)


# ----------------------------------------------------------------------------- loss curves


def test_loss_curves_draw_one_panel_per_quantity_with_train_and_validation_together(tmp_path, drawn):
    history = {"train_loss": [1.0, 0.5, 0.3, 0.2], "train_recon": [0.9, 0.4, 0.2, 0.1],
               "train_kl": [3.0, 2.0, 1.5, 1.2], "train_beta": [1e-7, 1e-5, 1e-3, 1e-3],
               "val_loss": [1.2, 0.6, 0.25, 0.4], "val_recon": [1.0, 0.5, 0.3, 0.35], "val_kl": [3.1, 2.2, 1.6, 1.3],
               "val_beta": [1e-7, 1e-5, 1e-3, 1e-3], "val_selection": [0.05, 0.04, 0.03, 0.035],
               "lr": [1e-3, 8e-4, 5e-4, 1e-4], "epoch": [1, 2, 3, 4]}
    path = tmp_path / "loss.png"
    assert_png(plots.plot_loss_curves(history, path, "VAE", kept_epoch=3, kept_value=0.03), path)
    fig = drawn[0]
    assert fig.get_suptitle() == "VAE; kept epoch 3"
    assert titles(fig) == ["reconstruction loss", "KL divergence (all levels)", "selection metric (the lowest is kept)",
                           "loss (what training minimises)", "KL weight (beta)", "learning rate"]
    panels = {ax.get_title(): ax for ax in fig.axes}
    legend = {name: [text.get_text() for text in ax.get_legend().get_texts()] for name, ax in panels.items()}
    assert legend["reconstruction loss"] == ["train (last 0.1)", "val (last 0.35)", "kept: epoch 3"]
    assert legend["KL weight (beta)"] == ["train (last 0.001)", "kept: epoch 3"]  # val is the same curve: once
    assert legend["learning rate"] == ["lr (last 0.0001)", "kept: epoch 3"]
    # the value that chose the kept epoch is marked where it was chosen, on the selection metric
    assert legend["selection metric (the lowest is kept)"] == ["val (last 0.035)", "kept: epoch 3", "kept value 0.03"]
    # every panel marks the kept epoch; values spanning decades get a log axis, the others a linear one
    assert all([3, 3] in [np.asarray(line.get_xdata()).tolist() for line in ax.get_lines()] for ax in fig.axes)
    assert {name: ax.get_yscale() for name, ax in panels.items()} == {
        "reconstruction loss": "linear", "KL divergence (all levels)": "linear",
        "selection metric (the lowest is kept)": "linear", "loss (what training minimises)": "linear", "KL weight (beta)": "log",
        "learning rate": "linear"}


def test_loss_curves_single_epoch_non_positive_values_and_a_kept_start(tmp_path, drawn):
    path = tmp_path / "loss.png"
    assert_png(plots.plot_loss_curves({"train_loss": [0.5], "train_kl": [0.0]}, path, "one epoch", kept_epoch=0),
               path)
    fig = drawn[0]
    assert titles(fig) == ["KL divergence (all levels)", "loss (what training minimises)"]
    assert [ax.get_yscale() for ax in fig.axes] == ["linear", "linear"]
    assert [np.asarray(line.get_xdata()).tolist() for line in fig.axes[0].get_lines()] == [[1], [0, 0]]
    assert fig.get_suptitle() == "one epoch; kept the weights before training (no epoch beat them)"
    assert [text.get_text() for text in fig.axes[0].get_legend().get_texts()] == ["train (last 0)", "kept: the start"]


def test_loss_curves_without_values_raises(tmp_path):
    with pytest.raises(ValueError, match=r"plot_loss_curves: history holds no values"):
        plots.plot_loss_curves({"train_loss": [], "epoch": [1]}, tmp_path / "loss.png", "empty")
    assert plt.get_fignums() == []


# ----------------------------------------------------------------------------- dual view


def test_dual_view_over_node_index_picks_informative_nodes_and_times(tmp_path, drawn):
    truth, prediction = field_pair()
    path = tmp_path / "dual.png"
    assert_png(plots.plot_dual_view(truth, prediction, path, "validation case 7", relative_error=0.0312), path)
    fig = drawn[0]
    assert titles(fig) == ["node 4 (largest variation)", "node 0 (largest error)", "node 2 (median variation)",
                           "timestep 1 (early)", "timestep 5 (middle)", "timestep 10 (late)"]
    suptitle = fig.get_suptitle()
    assert suptitle.startswith("validation case 7 | relative L2 error 3.12 %")
    assert "over node index at 3 timesteps" in suptitle
    assert not any(isinstance(c, TriMesh) for ax in fig.axes for c in ax.collections)


def test_dual_view_with_coordinates_draws_maps_with_shared_truth_prediction_scale(tmp_path, drawn):
    truth, prediction = field_pair()
    coordinates = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.5, 1.0]])
    path = tmp_path / "dual_map.png"
    result = plots.plot_dual_view(truth, prediction, path, "validation case 7", coordinates=coordinates,
                                  node_indices=[4, 0], time_indices=[3, 8])
    assert_png(result, path)
    fig = drawn[0]
    by_title = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert "node 4 (chosen)" in by_title and "node 0 (chosen)" in by_title
    assert "maps on the mesh at 2 timesteps" in fig.get_suptitle()
    meshes = [c for ax in fig.axes for c in ax.collections if isinstance(c, TriMesh)]
    assert len(meshes) == 6  # truth, prediction and error at 2 timesteps
    for time in (3, 8):
        truth_ax, prediction_ax = by_title[f"truth, timestep {time} (chosen)"], by_title[
            f"prediction, timestep {time} (chosen)"]
        shared = truth_ax.collections[0].get_clim()
        assert prediction_ax.collections[0].get_clim() == shared
        expected = (min(truth[time].min(), prediction[time].min()), max(truth[time].max(), prediction[time].max()))
        assert shared == pytest.approx(expected)
        assert by_title[f"|error|, timestep {time}"].collections[0].get_clim()[0] == 0.0


def test_dual_view_draws_a_planar_mesh_stored_in_3d_on_its_two_spread_axes(tmp_path, drawn):
    truth, prediction = field_pair(num_timesteps=3)
    coordinates = np.array([[0.0, 7.0, 0.0], [1.0, 7.0, 0.0], [0.0, 7.0, 1.0], [1.0, 7.0, 1.0], [0.5, 7.0, 2.0]])
    path = tmp_path / "dual_3d.png"
    assert_png(plots.plot_dual_view(truth, prediction, path, "case", coordinates=coordinates,
                                    node_indices=[1], time_indices=[2]), path)
    truth_ax = next(ax for ax in drawn[0].axes if ax.get_title().startswith("truth"))
    assert (truth_ax.get_xlabel(), truth_ax.get_ylabel()) == ("x", "z")


def test_dual_view_maps_leave_a_hole_in_the_part_empty(tmp_path, drawn):
    # a ring-shaped part: 8 rings of 32 nodes between radius 0.3 (the hole) and 1
    radius, angle = np.meshgrid(np.linspace(0.3, 1.0, 8), np.linspace(0.0, 2 * np.pi, 32, endpoint=False))
    nodes = np.stack([radius.ravel() * np.cos(angle.ravel()), radius.ravel() * np.sin(angle.ravel())], axis=1)
    truth = np.tile(nodes[:, 0], (3, 1))
    path = tmp_path / "holed.png"
    assert_png(plots.plot_dual_view(truth, truth + 0.01, path, "case", coordinates=nodes, time_indices=[1]), path)
    truth_ax = next(ax for ax in drawn[0].axes if ax.get_title().startswith("truth"))
    centroids = np.array([triangle.vertices[:3].mean(axis=0) for triangle in truth_ax.collections[0].get_paths()])
    assert len(centroids) == 2 * 7 * 32  # two triangles per cell of the ring, none more
    assert np.linalg.norm(centroids, axis=1).min() > 0.3


def test_dual_view_rejects_mismatched_shapes_with_a_clear_message(tmp_path):
    truth = np.zeros((4, 6))
    with pytest.raises(ValueError, match=re.escape(
            "plot_dual_view: truth has shape (4, 6) and prediction has shape (4, 5); expected both "
            "[num_timesteps, num_nodes] with the same shape. Fix: pass the prediction of the same case")):
        plots.plot_dual_view(truth, np.zeros((4, 5)), tmp_path / "dual.png", "case")
    assert plt.get_fignums() == []
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("keyword, value, message", [
    ("coordinates", np.zeros((4, 2)), r"coordinates have shape \(4, 2\); expected \[num_nodes=5, 2\]"),
    ("coordinates", np.c_[np.arange(5.0), 2 * np.arange(5.0)], r"could not triangulate the 5 node coordinates"),
    ("node_indices", [5], r"node_indices must be a non-empty list of indices in 0\.\.4, got \[5\]"),
    ("time_indices", [], r"time_indices must be a non-empty list of indices in 0\.\.10, got \[\]"),
])
def test_dual_view_rejects_bad_coordinates_and_indices(tmp_path, keyword, value, message):
    truth, prediction = field_pair()
    with pytest.raises(ValueError, match=message):
        plots.plot_dual_view(truth, prediction, tmp_path / "dual.png", "case", **{keyword: value})
    assert plt.get_fignums() == []
    assert os.listdir(tmp_path) == []


def test_pick_distinct_takes_the_next_best_when_a_node_is_already_chosen():
    rankings = [("a", np.array([3, 1, 2, 0])), ("b", np.array([3, 2, 1, 0])), ("c", np.array([3, 2, 1, 0]))]
    assert plots._pick_distinct(rankings, count=3) == [(3, "a"), (2, "b"), (1, "c")]
    assert plots._pick_distinct(rankings, count=1) == [(3, "a")]


# ----------------------------------------------------------------------------- parity


def test_parity_reports_hand_computed_r_squared_per_group(tmp_path, drawn):
    true_latents = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    # Column R^2: exact -> 1; residual 1 over total 2 -> 0.5; constant at the mean -> 0.
    predicted_latents = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [2.0, 3.0, 1.0]])
    path = tmp_path / "parity.png"
    assert_png(plots.plot_parity(true_latents, predicted_latents, path, "conditioner", num_main=2), path)
    (ax,) = drawn[0].axes
    assert ax.get_title() == "conditioner\nR² = 0.500 (mean over 3 dims) (main 0.750, hier 0.000)"
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["main (2 dims, R² 0.750)", "hier (1 dims, R² 0.000)", "y = x"]
    assert [len(collection.get_offsets()) for collection in ax.collections] == [6, 3]


def test_mean_r_squared_leaves_out_dimensions_constant_in_the_truth():
    true_values = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    predicted = np.array([[1.0, 4.0], [2.0, 6.0], [4.0, 5.0]])
    assert plots._mean_r_squared(true_values, predicted) == pytest.approx(0.5)
    assert math.isnan(plots._mean_r_squared(true_values[:, 1:], predicted[:, 1:]))


def test_parity_without_groups_and_its_shape_check(tmp_path, drawn):
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(6, 4))
    path = tmp_path / "parity.png"
    assert_png(plots.plot_parity(latents, latents, path, "perfect"), path)
    assert drawn[0].axes[0].get_title() == "perfect\nR² = 1.000 (mean over 4 dims)"
    with pytest.raises(ValueError, match=r"true_latents has shape \(6, 4\) and predicted_latents has shape \(6, 3\)"):
        plots.plot_parity(latents, latents[:, :3], path, "bad")
    with pytest.raises(ValueError, match=r"num_main is 5 but the latents have 4 columns"):
        plots.plot_parity(latents, latents, path, "bad", num_main=5)


# ----------------------------------------------------------------------------- error histogram


def test_error_histogram_in_percent_with_non_finite_errors_counted(tmp_path, drawn):
    errors = {"VAE": np.array([0.01, 0.02, 0.02, 0.03]), "PCA": np.array([0.04, 0.05, np.nan])}
    path = tmp_path / "errors.png"
    assert_png(plots.plot_error_histogram(errors, path, "validation"), path)
    (ax,) = drawn[0].axes
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["VAE: 4 cases, median 2.00 %, 95th pct 2.85 %",
                      "PCA: 2 cases, median 4.50 %, 95th pct 4.95 %, 1 non-finite not drawn"]
    assert ax.get_xlabel() == "relative L2 error [%]"
    left, right = ax.get_xlim()
    assert left <= 1.0 and right >= 5.0  # drawn in percent, not as fractions


def test_error_histogram_rejects_an_empty_model(tmp_path):
    with pytest.raises(ValueError, match=r"errors_by_model\['PCA'\] is empty"):
        plots.plot_error_histogram({"VAE": np.array([0.1]), "PCA": np.array([])}, tmp_path / "e.png", "t")
    assert plt.get_fignums() == []


# ----------------------------------------------------------------------------- files


def test_saving_replaces_an_earlier_plot_and_creates_missing_folders(tmp_path):
    path = tmp_path / "plots" / "nested" / "errors.png"
    plots.plot_error_histogram({"VAE": np.array([0.01, 0.02])}, path, "first")
    first = path.read_bytes()
    assert_png(plots.plot_error_histogram({"VAE": np.array([0.5, 0.9, 0.7])}, path, "second"), path)
    assert path.read_bytes() != first


def test_failed_save_keeps_the_earlier_plot_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "errors.png"
    path.write_bytes(b"earlier plot")

    def failing_savefig(self, target, **kwargs):
        target.write(b"half a png")  # the writer hands savefig an open temp file
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", failing_savefig)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_error_histogram({"VAE": np.array([0.01])}, path, "t")
    assert os.listdir(tmp_path) == ["errors.png"]
    assert path.read_bytes() == b"earlier plot"
    assert plt.get_fignums() == []


def test_only_png_paths_are_accepted(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.png"):
        plots.plot_error_histogram({"VAE": np.array([0.01])}, tmp_path / "errors.jpg", "t")
    assert os.listdir(tmp_path) == []


def test_without_a_path_the_figure_is_shown_then_closed(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(len(plt.get_fignums())))
    monkeypatch.chdir(tmp_path)
    assert plots.plot_error_histogram({"VAE": np.array([0.01, 0.02])}, None, "t") is None
    assert shown == [1]  # the figure was open while shown
    assert plt.get_fignums() == []
    assert os.listdir(tmp_path) == []
