"""The figures of a training run (--plot=1 saves them under OUT/plots, --plot=0 shows them)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from modules.config.schema import RunConfig
from modules.data.prepared_sweep import PreparedSweep
from modules.data.sweep_file import read_cases
from modules.data.variables import variable_of
from modules.evaluation.conditioner_evaluation import ConditionerEvaluation
from modules.evaluation.vae_evaluation import VAEEvaluation, plotted_positions
from modules.storage.run_directory import RunDirectory
from modules.training.loop import TrainingResult
from modules.training.run_log import RunLog


def require_plot_backend(config: RunConfig) -> None:
    """Refuse --plot=0 where no window can open before anything is read or trained (it was found after the
    VAE had trained: minutes to hours lost on a large sweep)."""
    if config.plot_mode in (0, 1):
        from modules.evaluation import plots  # matplotlib only when plots are asked for
        plots.configure_backend(config.plot_mode == 0)


class RunFigures:
    """Draws each figure into OUT/plots/<name>.png, or on screen with --plot=0."""

    def __init__(self, config: RunConfig, run_dir: RunDirectory, sweep: PreparedSweep, log: RunLog):
        from modules.evaluation import plots  # matplotlib only when plots are asked for

        self.plots = plots
        self.config, self.run_dir, self.sweep, self.log = config, run_dir, sweep, log
        self.show = config.plot_mode == 0
        plots.configure_backend(self.show)

    def target(self, name: str) -> Optional[Path]:
        return None if self.show else self.run_dir.plots / name

    def vae(self, evaluation: VAEEvaluation, result: Optional[TrainingResult]) -> None:
        plots = self.plots
        if result is not None:
            plots.plot_loss_curves(result.history, self.target("vae_loss_curves.png"), "VAE training",
                                   kept_epoch=result.best_epoch + 1, kept_value=result.best_val_loss)
        plots.plot_error_histogram({"VAE": evaluation.vae["val"], "PCA": evaluation.pca["val"]},
                                   self.target("vae_vs_pca_errors.png"), "Validation reconstruction error")
        self._dual_views(evaluation.vae["val"], evaluation.val_reconstructions, "vae_{label}_case.png",
                         "VAE reconstruction, {label} validation case {case}")
        if not self.show:
            self.log.info(f"plots: {self.run_dir.plots}")

    def conditioner(self, evaluation: ConditionerEvaluation, result: Optional[TrainingResult],
                    num_main_latents: int) -> None:
        plots = self.plots
        if result is not None:
            plots.plot_loss_curves(result.history, self.target("conditioner_loss_curves.png"),
                                   "Latent conditioner training", kept_epoch=result.best_epoch + 1,
                                   kept_value=result.best_val_loss)
        plots.plot_parity(evaluation.val_latents_true, evaluation.val_latents_predicted,
                          self.target("latent_parity.png"), "Predicted vs VAE latent codes, validation designs",
                          num_main=num_main_latents)
        plots.plot_error_histogram({"conditioner + decoder": evaluation.errors["conditioner"]["val"],
                                    "POD + GP": evaluation.errors["pod_gp"]["val"],
                                    "nearest design": evaluation.errors["nearest_neighbour"]["val"]},
                                   self.target("prediction_errors.png"), "Validation prediction error")
        self._dual_views(evaluation.errors["conditioner"]["val"], evaluation.val_predictions, "prediction_{label}_design.png",
                         "Prediction from the design alone, {label} validation design {case}")

    def _dual_views(self, errors: np.ndarray, fields: Dict[int, np.ndarray], name: str, title: str) -> None:
        """Truth beside `fields` for the median and the worst validation case (`plotted_positions`); with
        num_var > 1, of the variable plot_variable chooses (the error in the title is the whole case's)."""
        data = self.config.data
        shown, variable_text = (lambda field: field), ""
        if data.num_variables > 1:
            shown = lambda field: variable_of(field, data.plot_variable, data.num_variables)  # noqa: E731
            variable_text = (f", variable {data.plot_variable} of {data.num_variables} (plot_variable; the error is over "
                             f"all variables)")
        for label, position in plotted_positions(errors).items():
            case = int(self.sweep.val_indices[position])
            truth = read_cases(self.sweep.array, [case], data)[0]
            triangles = None if self.sweep.triangles is None else self.sweep.triangles.triangles
            self.plots.plot_dual_view(shown(truth), shown(fields[case]), self.target(name.format(label=label)),
                                      title.format(label=label, case=case) + variable_text,
                                      coordinates=self.sweep.coordinates, relative_error=float(errors[position]),
                                      triangles=triangles)
