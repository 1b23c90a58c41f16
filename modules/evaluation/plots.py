"""Figures for judging a surrogate of transient fields [num_timesteps, num_nodes].

This is the only module that imports matplotlib. Every function takes numpy
arrays in physical units and an output path. With a path it writes a PNG
atomically (a temp file in the same folder, then `os.replace`, so a reader
never sees half a file and an earlier plot survives a failed save) and returns
the path; with `None` it shows the figure in a window and returns None. The
figure is closed either way so a long run does not accumulate figures.

Call `configure_backend` once before the first plot.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.tri as mtri
import numpy as np

from modules.data.mesh_triangles import masked_delaunay, planar_axes
from modules.storage.atomic_files import replace_atomically
from modules.errors import SimulGenError

PathLike = Union[str, "os.PathLike[str]"]
DPI = 100
"""Pixels per inch of every saved PNG."""

# Backends that can only write files; matplotlib falls back to "agg" by itself when there is no display.
_FILE_ONLY_BACKENDS = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}
# Panels of the loss-curve figure: the quantities in this order (others after them), with these titles.
_QUANTITY_ORDER = ("recon", "kl", "selection", "loss", "field", "latent", "beta", "lr")
_QUANTITY_TITLES = {"recon": "reconstruction loss", "kl": "KL divergence (all levels)",
                    "selection": "selection metric (the lowest is kept)", "loss": "loss (what training minimises)",
                    "field": "field loss (end-to-end)", "latent": "latent distance (end-to-end)",
                    "beta": "KL weight (beta)", "lr": "learning rate"}
# A panel gets a log axis when its values are positive and span more than this factor.
_LOG_SPAN = 10.0
_IGNORED_HISTORY_KEYS = ("epoch",)
# Fractions of the time window shown as early/middle/late; t=0 is skipped because it is
# usually the uniform initial condition and says nothing about the surrogate.
_TIME_FRACTIONS = ((0.1, "early"), (0.5, "middle"), (1.0, "late"))
_LABEL_OFFSETS = ((4, 4), (4, -10), (-4, 4), (-4, -10))  # points from a marked node to its label
_HISTOGRAM_STYLES = ("solid", (0, (6, 3)), (0, (1, 2)))
_MARKER_BELOW = 30  # draw point markers when a series is this short, so 1-point series are visible

NodeChoice = Tuple[int, str]  # (index, why it was chosen)


def configure_backend(show: bool) -> None:
    """Pick the matplotlib backend once: Agg for saving, the interactive default for showing.

    Raises SimulGenError when `show` is asked for but no window can be opened.
    """
    if not show:
        matplotlib.use("Agg")
        return
    backend = plt.get_backend()  # resolves matplotlib's automatic choice
    if backend.lower() in _FILE_ONLY_BACKENDS:
        raise SimulGenError(
            f"plots were asked to open windows (--plot=0), but matplotlib's backend '{backend}' can only "
            "write files (no display was found, or MPLBACKEND names a file-only backend).\n"
            "    fix: use --plot=1 to save PNGs instead, or run where a display is available")


def plot_loss_curves(history: Mapping[str, Sequence[float]], path: Optional[PathLike],
                     title: str = "Training history", kept_epoch: Optional[int] = None,
                     kept_value: Optional[float] = None) -> Optional[Path]:
    """One panel per quantity over epochs, so every axis holds one unit: the training and validation
    values of a quantity share its panel ('train_recon' and 'val_recon' -> 'reconstruction loss'); the
    learning rate and the KL weight have their own.

    history: one list per key with one value per epoch, e.g. train_loss, val_loss, train_kl, lr. Empty
    lists are skipped; 'epoch' is ignored. kept_epoch: the epoch whose weights were kept (1-based; 0 = the
    weights before training), drawn as a dashed line in every panel. kept_value: its validation value of
    the metric that chose it ('selection', else 'loss'), marked in that panel (the weights before training
    have no other point there).
    """
    _check_output_path(path)
    series = {key: np.asarray(values, dtype=float).ravel() for key, values in history.items()
              if key not in _IGNORED_HISTORY_KEYS and len(values) > 0}
    if not series:
        raise ValueError("plot_loss_curves: history holds no values; expected one list per quantity with "
                         "one value per epoch, e.g. {'train_loss': [0.5, 0.3], 'val_loss': [0.6, 0.4]}")
    panels = _quantity_panels(series)
    chosen_by = "selection" if "selection" in panels else "loss"
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    with _figure(rows, columns, figsize=(5.0 * columns, 3.4 * rows)) as (fig, axes):
        for ax, (quantity, curves) in zip(axes.flat, panels.items()):
            for label, values in curves.items():
                epochs = np.arange(1, values.size + 1)
                ax.plot(epochs, values, marker="o" if values.size < _MARKER_BELOW else None, markersize=3,
                        label=f"{label} (last {values[-1]:.3g})")
            if kept_epoch is not None:
                ax.axvline(kept_epoch, color="black", linestyle="--", linewidth=1,
                           label=f"kept: epoch {kept_epoch}" if kept_epoch > 0 else "kept: the start")
                if kept_value is not None and quantity == chosen_by:
                    ax.plot([kept_epoch], [kept_value], marker="*", markersize=12, color="black", linestyle="none",
                            label=f"kept value {kept_value:.3g}")
            pooled = np.concatenate(list(curves.values())
                                    + ([[kept_value]] if kept_value is not None and quantity == chosen_by else []))
            log_scale = _all_positive(pooled) and np.nanmax(pooled) > _LOG_SPAN * np.nanmin(pooled)
            ax.set_yscale("log" if log_scale else "linear")
            ax.set_title(_QUANTITY_TITLES.get(quantity, quantity.replace("_", " ")), fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=8)
        for ax in list(axes.flat)[len(panels):]:
            ax.remove()
        kept = "" if kept_epoch is None else (f"; kept epoch {kept_epoch}" if kept_epoch > 0 else
                                               "; kept the weights before training (no epoch beat them)")
        fig.suptitle(title + kept)
        return _emit(fig, path)


def _quantity_panels(series: Mapping[str, np.ndarray]) -> Dict[str, Dict[str, np.ndarray]]:
    """{quantity: {"train" / "val" / key: values}} in _QUANTITY_ORDER, then the others as they come; a
    validation curve equal to the training one (e.g. the KL weight) is drawn once."""
    panels: Dict[str, Dict[str, np.ndarray]] = {}
    for key, values in series.items():
        split, _, quantity = key.partition("_")
        if split not in ("train", "val") or not quantity:
            split, quantity = key, key
        train = panels.get(quantity, {}).get("train")
        if split == "val" and train is not None and train.shape == values.shape and np.allclose(train, values,
                                                                                                rtol=1e-9, atol=0):
            continue
        panels.setdefault(quantity, {})[split] = values
    rank = {quantity: index for index, quantity in enumerate(_QUANTITY_ORDER)}
    return dict(sorted(panels.items(), key=lambda item: rank.get(item[0], len(rank))))


def plot_dual_view(truth: np.ndarray, prediction: np.ndarray, path: Optional[PathLike], title: str,
                   coordinates: Optional[np.ndarray] = None,
                   node_indices: Optional[Sequence[int]] = None,
                   time_indices: Optional[Sequence[int]] = None,
                   relative_error: Optional[float] = None,
                   triangles: Optional[np.ndarray] = None) -> Optional[Path]:
    """Truth vs prediction of one case, over time at a few nodes and over the mesh at a few times.

    truth, prediction: [num_timesteps, num_nodes] in physical units.
    coordinates: [num_nodes, 2] node positions (3 columns are accepted for a mesh stored in 3-D:
        the two axes of largest extent are drawn). Given, row 2 draws maps on the mesh; otherwise
        lines over node index.
    triangles: [num_triangles, 3] mesh connectivity; without it the coordinates are
        Delaunay-triangulated with the triangles larger than the mesh around them masked, so holes and
        notches of the part stay empty (modules.data.mesh_triangles).
    node_indices: nodes of row 1 (default: largest variation, largest error, median variation).
    time_indices: timesteps of row 2 (default: early, middle and last).
    relative_error: the case's relative L2 error as a fraction (0.03 = 3 %), shown in the title.
    """
    _check_output_path(path)
    truth = np.asarray(truth, dtype=float)
    prediction = np.asarray(prediction, dtype=float)
    if truth.ndim != 2 or truth.shape != prediction.shape:
        raise ValueError(
            f"plot_dual_view: truth has shape {truth.shape} and prediction has shape {prediction.shape}; "
            "expected both [num_timesteps, num_nodes] with the same shape. "
            "Fix: pass the prediction of the same case over the same timestep and node window as the truth.")
    num_timesteps, num_nodes = truth.shape
    abs_error = np.abs(prediction - truth)
    triangulation, axis_names = (None, None) if coordinates is None else _triangulation(
        coordinates, triangles, num_nodes)
    if node_indices is None:
        nodes = _pick_distinct([
            ("largest variation", _descending(truth.var(axis=0))),
            ("largest error", _descending(abs_error.mean(axis=0))),
            ("median variation", _nearest_to_median(truth.var(axis=0))),
        ], count=min(3, num_nodes))
    else:
        nodes = [(index, "chosen") for index in _checked_indices(node_indices, num_nodes, "node_indices")]
    if time_indices is None:
        times = _default_times(num_timesteps)
    else:
        times = [(index, "chosen") for index in _checked_indices(time_indices, num_timesteps, "time_indices")]

    num_columns = max(len(nodes), len(times))
    if triangulation is None:
        height_ratios = [3.0, 1.5, 3.0, 1.5]
    else:
        map_ratio = _map_height_ratio(triangulation)
        height_ratios = [3.0, 1.5, map_ratio, map_ratio, map_ratio]
    with _figure(len(height_ratios), num_columns, figsize=(5.0 * num_columns, 1.2 * sum(height_ratios)),
                 gridspec_kw={"height_ratios": height_ratios}) as (fig, axes):
        _draw_over_time(axes[0], axes[1], truth, prediction, abs_error, nodes)
        if triangulation is None:
            _draw_over_nodes(axes[2], axes[3], truth, prediction, abs_error, times)
        else:
            _draw_maps(fig, axes[2:], triangulation, axis_names, truth, prediction, abs_error, times, nodes)
        for row_index, row in enumerate(axes):
            for ax in row[len(nodes) if row_index < 2 else len(times):]:
                ax.remove()  # a column that only the other row needs
        view = "maps on the mesh" if triangulation is not None else "over node index"
        error_text = "" if relative_error is None else f" | relative L2 error {100.0 * relative_error:.2f} %"
        fig.suptitle(f"{title}{error_text}\nrows 1-2: over time at {len(nodes)} nodes; "
                     f"rows 3+: {view} at {len(times)} timesteps")
        return _emit(fig, path)


def plot_parity(true_latents: np.ndarray, predicted_latents: np.ndarray, path: Optional[PathLike],
                title: str, num_main: Optional[int] = None) -> Optional[Path]:
    """Predicted vs true latent values of all dimensions, with y = x and R^2 in the title.

    true_latents, predicted_latents: [num_cases, latent_dim]. num_main: the first num_main
    columns are the main latent, the rest hierarchical; given, the two groups are coloured apart.
    R^2 is the mean over dimensions of each dimension's R^2 (dimensions constant in the truth,
    where R^2 is undefined, are left out).
    """
    _check_output_path(path)
    true_latents = np.asarray(true_latents, dtype=float)
    predicted_latents = np.asarray(predicted_latents, dtype=float)
    if true_latents.ndim != 2 or true_latents.shape != predicted_latents.shape:
        raise ValueError(
            f"plot_parity: true_latents has shape {true_latents.shape} and predicted_latents has shape "
            f"{predicted_latents.shape}; expected both [num_cases, latent_dim] with the same shape. "
            "Fix: pass the predicted and the VAE's latents of the same cases.")
    latent_dim = true_latents.shape[1]
    if num_main is not None and not 0 <= num_main <= latent_dim:
        raise ValueError(f"plot_parity: num_main is {num_main} but the latents have {latent_dim} columns; "
                         f"expected 0..{latent_dim}. Fix: pass latent_dim_main.")
    if num_main is None:
        groups = [("latent", slice(0, latent_dim))]
    else:
        groups = [("main", slice(0, num_main)), ("hier", slice(num_main, latent_dim))]
        groups = [(name, columns) for name, columns in groups if columns.stop > columns.start]

    with _figure(1, 1, figsize=(6.0, 6.0)) as (fig, axes):
        ax = axes[0][0]
        group_texts = []
        for name, columns in groups:
            group_r_squared = _mean_r_squared(true_latents[:, columns], predicted_latents[:, columns])
            group_texts.append(f"{name} {_format_r_squared(group_r_squared)}")
            ax.scatter(true_latents[:, columns].ravel(), predicted_latents[:, columns].ravel(), s=8, alpha=0.5,
                       label=f"{name} ({columns.stop - columns.start} dims, R² {_format_r_squared(group_r_squared)})")
        low, high = _padded_range(np.concatenate([true_latents.ravel(), predicted_latents.ravel()]))
        ax.plot([low, high], [low, high], color="black", linewidth=1, label="y = x")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal")
        ax.set_xlabel("true latent value")
        ax.set_ylabel("predicted latent value")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        overall = _format_r_squared(_mean_r_squared(true_latents, predicted_latents))
        detail = f" ({', '.join(group_texts)})" if len(groups) > 1 else ""
        ax.set_title(f"{title}\nR² = {overall} (mean over {latent_dim} dims){detail}", fontsize=10)
        return _emit(fig, path)


def plot_error_histogram(errors_by_model: Mapping[str, np.ndarray], path: Optional[PathLike],
                         title: str = "Relative L2 error per case") -> Optional[Path]:
    """Distributions of per-case relative L2 errors, one per model (e.g. VAE vs PCA), in percent.

    errors_by_model: model name -> errors as fractions (0.03 = 3 %). All models share the bins.
    Non-finite errors are not drawn; the legend counts them.
    """
    _check_output_path(path)
    if not errors_by_model:
        raise ValueError("plot_error_histogram: errors_by_model is empty; expected e.g. "
                         "{'VAE': errors, 'PCA': errors} with one relative L2 error per case")
    percents = {}
    for name, errors in errors_by_model.items():
        values = np.asarray(errors, dtype=float).ravel()
        if values.size == 0:
            raise ValueError(f"plot_error_histogram: errors_by_model['{name}'] is empty; "
                             "expected one relative L2 error per case")
        percents[name] = (100.0 * values[np.isfinite(values)], int(np.count_nonzero(~np.isfinite(values))))
    pooled = np.concatenate([finite for finite, _ in percents.values()])
    num_bins = int(np.clip(2 * np.sqrt(max(finite.size for finite, _ in percents.values())), 5, 40))
    edges = np.histogram_bin_edges(pooled, bins=num_bins) if pooled.size else np.linspace(0.0, 1.0, 6)

    with _figure(1, 1, figsize=(7.5, 4.5)) as (fig, axes):
        ax = axes[0][0]
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for model_index, (name, (finite, num_non_finite)) in enumerate(percents.items()):
            color = colors[model_index % len(colors)]
            skipped = f", {num_non_finite} non-finite not drawn" if num_non_finite else ""
            if finite.size == 0:
                ax.plot([], [], color=color, label=f"{name}: no finite errors{skipped}")
                continue
            median, p95 = np.percentile(finite, [50, 95])
            ax.hist(finite, bins=edges, histtype="stepfilled", alpha=0.25, color=color)
            # Each model its own line style: models with the same errors (VAE = PCA) stay visible on top of
            # each other.
            ax.hist(finite, bins=edges, histtype="step", linewidth=1.5, color=color,
                    linestyle=_HISTOGRAM_STYLES[model_index % len(_HISTOGRAM_STYLES)],
                    label=f"{name}: {finite.size} cases, median {median:.2f} %, 95th pct {p95:.2f} %{skipped}")
            ax.axvline(median, color=color, linestyle="--", linewidth=1)
        ax.set_xlabel("relative L2 error [%]")
        ax.set_ylabel("cases")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{title} (dashed: median)")
        return _emit(fig, path)


# ----------------------------------------------------------------------------- drawing helpers


def _draw_over_time(value_axes, error_axes, truth, prediction, abs_error, nodes: List[NodeChoice]) -> None:
    timesteps = np.arange(truth.shape[0])
    marker = "o" if truth.shape[0] < _MARKER_BELOW else None
    for ax, ax_error, (node, reason) in zip(value_axes, error_axes, nodes):
        ax.plot(timesteps, truth[:, node], color="black", linewidth=1.5, marker=marker, markersize=3,
                label="truth")
        ax.plot(timesteps, prediction[:, node], color="tab:red", linestyle="--", linewidth=1.5, marker=marker,
                markersize=3, label="prediction")
        ax.set_title(f"node {node} ({reason})", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax_error.sharex(ax)
        ax_error.plot(timesteps, abs_error[:, node], color="tab:orange", marker=marker, markersize=3)
        ax_error.set_xlabel("timestep")
        ax_error.grid(True, alpha=0.3)
    value_axes[0].set_ylabel("value")
    value_axes[0].legend(fontsize=8)
    error_axes[0].set_ylabel("|error|")


def _draw_over_nodes(value_axes, error_axes, truth, prediction, abs_error, times: List[NodeChoice]) -> None:
    node_axis = np.arange(truth.shape[1])
    marker = "o" if truth.shape[1] < _MARKER_BELOW else None
    for ax, ax_error, (time, label) in zip(value_axes, error_axes, times):
        ax.plot(node_axis, truth[time], color="black", linewidth=1, marker=marker, markersize=3, label="truth")
        ax.plot(node_axis, prediction[time], color="tab:red", linestyle="--", linewidth=1, marker=marker,
                markersize=3, label="prediction")
        ax.set_title(f"timestep {time} ({label})", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax_error.sharex(ax)
        ax_error.plot(node_axis, abs_error[time], color="tab:orange", linewidth=1, marker=marker, markersize=3)
        ax_error.set_xlabel("node index")
        ax_error.grid(True, alpha=0.3)
    value_axes[0].set_ylabel("value")
    value_axes[0].legend(fontsize=8)
    error_axes[0].set_ylabel("|error|")


def _draw_maps(fig, map_rows, triangulation, axis_names, truth, prediction, abs_error, times: List[NodeChoice],
               nodes: List[NodeChoice]) -> None:
    truth_axes, prediction_axes, error_axes = map_rows
    x_name, y_name = axis_names
    for column, (time, label) in enumerate(times):
        ax_truth, ax_prediction, ax_error = truth_axes[column], prediction_axes[column], error_axes[column]
        # Truth and prediction share one scale per timestep so equal colours mean equal values.
        low, high = _finite_range(np.concatenate([truth[time], prediction[time]]))
        for ax, values, name in ((ax_truth, truth[time], "truth"), (ax_prediction, prediction[time], "prediction")):
            image = ax.tripcolor(triangulation, values, shading="gouraud", cmap="viridis", vmin=low, vmax=high)
            ax.set_title(f"{name}, timestep {time} ({label})", fontsize=10)
        fig.colorbar(image, ax=[ax_truth, ax_prediction], shrink=0.8, label="value")
        error_image = ax_error.tripcolor(triangulation, abs_error[time], shading="gouraud", cmap="magma",
                                         vmin=0.0, vmax=max(_finite_range(abs_error[time])[1], 0.0))
        ax_error.set_title(f"|error|, timestep {time}", fontsize=10)
        fig.colorbar(error_image, ax=ax_error, shrink=0.8, label="|error|")
        # Mark the nodes of rows 1-2 so the two views can be read together; each label on its own side, as
        # the chosen nodes are often neighbours (largest variation and largest error).
        for index, (node, _) in enumerate(nodes):
            offset = _LABEL_OFFSETS[index % len(_LABEL_OFFSETS)]
            ax_truth.plot(triangulation.x[node], triangulation.y[node], marker="o", markersize=6,
                          markerfacecolor="none", markeredgecolor="red")
            ax_truth.annotate(str(node), (triangulation.x[node], triangulation.y[node]), fontsize=7, color="red",
                              xytext=offset, textcoords="offset points", ha="right" if offset[0] < 0 else "left")
        for ax in (ax_truth, ax_prediction, ax_error):
            ax.set_aspect("equal")
            ax.set_xlabel(x_name)
            ax.set_ylabel(y_name)


# ----------------------------------------------------------------------------- checks and selection


def _triangulation(coordinates, triangles, num_nodes: int) -> Tuple[mtri.Triangulation, Tuple[str, str]]:
    """The triangulation to draw maps on and the names of its two axes."""
    coordinates = np.asarray(coordinates, dtype=float)
    if coordinates.ndim != 2 or coordinates.shape[0] != num_nodes or coordinates.shape[1] not in (2, 3):
        raise ValueError(
            f"plot_dual_view: coordinates have shape {coordinates.shape}; expected [num_nodes={num_nodes}, 2] "
            "(or 3 columns for a planar mesh stored in 3-D). "
            "Fix: pass the coordinates of the same nodes as the field (same node window).")
    names = ("x", "y", "z")
    kept = planar_axes(coordinates)
    if triangles is not None:
        triangles = np.asarray(triangles)
        if (triangles.ndim != 2 or triangles.shape[1] != 3 or not np.issubdtype(triangles.dtype, np.integer)
                or triangles.size == 0 or triangles.min() < 0 or triangles.max() >= num_nodes):
            raise ValueError(f"plot_dual_view: triangles must be integer node indices [num_triangles, 3] in "
                             f"0..{num_nodes - 1}, got shape {triangles.shape} dtype {triangles.dtype}. "
                             "Fix: pass the mesh's triangle connectivity for the same node window, or None.")
    try:
        if triangles is None:
            triangles, _ = masked_delaunay(coordinates)
        triangulation = mtri.Triangulation(coordinates[:, kept[0]], coordinates[:, kept[1]], triangles)
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"plot_dual_view: could not triangulate the {num_nodes} node coordinates ({error}); "
            "this happens when all nodes lie on one line or fewer than 3 are distinct. "
            "Fix: pass triangles=<mesh connectivity>, or coordinates=None to plot over node index.") from error
    return triangulation, (names[kept[0]], names[kept[1]])


def _map_height_ratio(triangulation: mtri.Triangulation) -> float:
    """Row height that fits an equal-aspect map of the part in one 5-inch column."""
    width, height = np.ptp(triangulation.x), np.ptp(triangulation.y)
    aspect = height / width if width > 0 else 1.0
    # About 3.8 inches of the column are left for the map beside its colour bar; 0.9 inch goes
    # to title and tick labels; figure height is 1.2 inches per unit of ratio.
    return float(np.clip((3.8 * aspect + 0.9) / 1.2, 1.5, 4.5))


def _checked_indices(indices: Sequence[int], size: int, name: str) -> List[int]:
    values = [int(index) for index in indices]
    if not values or any(not 0 <= index < size for index in values):
        raise ValueError(f"{name} must be a non-empty list of indices in 0..{size - 1}, got {list(indices)}")
    return values


def _default_times(num_timesteps: int) -> List[NodeChoice]:
    chosen: List[NodeChoice] = []
    for fraction, label in _TIME_FRACTIONS:
        index = int(round((num_timesteps - 1) * fraction))
        if index not in [time for time, _ in chosen]:
            chosen.append((index, label))
    return chosen


def _descending(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, kind="stable")


def _nearest_to_median(scores: np.ndarray) -> np.ndarray:
    return np.argsort(np.abs(scores - np.nanmedian(scores)), kind="stable")


def _pick_distinct(rankings: Sequence[Tuple[str, np.ndarray]], count: int) -> List[NodeChoice]:
    """The best index of each ranking that an earlier ranking has not taken already."""
    chosen: List[NodeChoice] = []
    for reason, order in rankings[:count]:
        taken = {index for index, _ in chosen}
        index = next(int(candidate) for candidate in order if int(candidate) not in taken)
        chosen.append((index, reason))
    return chosen


def _mean_r_squared(true_values: np.ndarray, predicted_values: np.ndarray) -> float:
    """Mean over columns of 1 - SS_res / SS_tot; NaN when every column is constant in the truth."""
    residual = np.sum((true_values - predicted_values) ** 2, axis=0)
    total = np.sum((true_values - true_values.mean(axis=0)) ** 2, axis=0)
    defined = total > 0
    if not np.any(defined):
        return float("nan")
    return float(np.mean(1.0 - residual[defined] / total[defined]))


def _format_r_squared(value: float) -> str:
    return "undefined (constant truth)" if math.isnan(value) else f"{value:.3f}"


def _all_positive(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 0 and bool(np.all(finite > 0))


def _finite_range(values: np.ndarray) -> Tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    return float(finite.min()), float(finite.max())


def _padded_range(values: np.ndarray) -> Tuple[float, float]:
    low, high = _finite_range(values)
    pad = 0.05 * (high - low) if high > low else 0.5
    return low - pad, high + pad


# ----------------------------------------------------------------------------- figure and file


@contextmanager
def _figure(num_rows: int, num_columns: int, **kwargs) -> Iterator[Tuple[plt.Figure, np.ndarray]]:
    fig, axes = plt.subplots(num_rows, num_columns, squeeze=False, layout="constrained", dpi=DPI, **kwargs)
    try:
        yield fig, axes
    finally:
        plt.close(fig)


def _check_output_path(path: Optional[PathLike]) -> None:
    if path is not None and Path(path).suffix.lower() != ".png":
        raise ValueError(f"plot path '{path}' must end in .png; these functions write PNG files only")


def _emit(fig: plt.Figure, path: Optional[PathLike]) -> Optional[Path]:
    if path is None:
        plt.show()
        return None
    return replace_atomically(Path(path), lambda handle: fig.savefig(handle, format="png", dpi=DPI))
