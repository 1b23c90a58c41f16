"""The training command: VAE, then the latent conditioner, then the report and plots."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from modules.config.schema import RunConfig
from modules.data.sweep_file import read_cases
from modules.errors import CheckpointError, SimulGenError
from modules.evaluation.report import format_report_table, write_report
from modules.surrogate.vae_bundle import load_vae_bundle, vae_must_match
from modules.storage.state_files import load_state, require_matching, write_atomically
from modules.storage.run_directory import RunDirectory
from modules.training.run_log import RunLog
from modules.runtime.distributed import Runtime, setup_runtime, shutdown_runtime
from modules.data.prepared_sweep import PreparedSweep, ensure_demo_data, prepare_sweep
from modules.training.loop import TrainingResult
from modules.training import conditioner_stage
from modules.training import vae_stage


def restarted_by_torchrun() -> bool:
    """torchrun --max-restarts: a restarted group continues from its checkpoints."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def _has_checkpoint(run_dir: RunDirectory) -> bool:
    try:
        run_dir.require_resumable()
    except SimulGenError:
        return False
    return True


def run_training(config: RunConfig, notices: List[str], show_progress: bool = True) -> Dict[str, Any]:
    """Run every stage the config asks for; returns the report (rank 0) or {} (other ranks)."""
    # A group that died before its first checkpoint has nothing to resume: it starts again.
    if restarted_by_torchrun() and not config.resume and _has_checkpoint(RunDirectory(Path(config.output_dir))):
        from dataclasses import replace
        config = replace(config, resume=True)
    runtime = setup_runtime(config.train.device, config.train.amp, config.use_ddp)
    try:
        return _run(config, notices, runtime, show_progress)
    finally:
        shutdown_runtime(runtime)


def _run(config: RunConfig, notices: List[str], runtime: Runtime, show_progress: bool) -> Dict[str, Any]:
    conditioner_stage.check_before_training(config)  # a conditioner setting that cannot work stops the run now
    run_dir = RunDirectory(Path(config.output_dir))
    run_dir.guard_previous_run(config.lc_only, config.resume, config.overwrite)
    if config.resume:
        run_dir.require_resumable()
    log = RunLog(run_dir.log_file, run_dir.tensorboard, enabled=runtime.is_main, show_progress=show_progress)
    for notice in notices:
        log.info(f"note: {notice}")
    try:
        base_dir = Path.cwd()
        if runtime.is_main:
            ensure_demo_data(config.data, base_dir)  # one writer; the other ranks find the files after the barrier
        runtime.barrier()
        sweep = prepare_sweep(config, base_dir, runtime)
        copies = f", one copy per process ({runtime.world_size}); --load_all=0 streams instead" \
            if runtime.distributed else ""
        if runtime.is_main and not config.resume:  # a resumed run keeps the settings file of the run it continues
            write_atomically(run_dir.config_json,
                             lambda stream: stream.write(json.dumps(config.to_dict(), indent=2) + "\n"), "w")
        log.info(f"data: {sweep.path} ({config.data.num_cases} cases; window {config.data.timesteps} timesteps x "
                 f"{config.data.nodes} nodes; "
                 f"{'in memory' + copies if config.data.load_all else 'streamed from disk'})")
        report: Dict[str, Any] = {"data": str(sweep.path), "output_dir": str(run_dir.root)}
        model, result = _vae(config, sweep, runtime, run_dir, log)
        latents = vae_stage.encode_cases(model, sweep.array, config, sweep.scaler, runtime.device)
        if runtime.is_main:
            evaluation = vae_stage.evaluate_vae(model, sweep, config, runtime.device)
            vae_stage.save_latents(run_dir, latents, sweep)
            report["vae"] = vae_stage.vae_report_section(evaluation, result, model, sweep)
            log.info(f"latent vectors: {run_dir.latents}")
            if config.plot_mode in (0, 1):
                _vae_plots(config, run_dir, sweep, evaluation, result, log)
        trained, lc_result, designs = conditioner_stage.train_conditioner(
            config, sweep, model, latents, runtime, run_dir, log, base_dir)
        if runtime.is_main:
            lc_evaluation = conditioner_stage.evaluate_conditioner(trained, model, designs, latents, sweep, config,
                                                                   runtime.device, evaluation.case_gram)
            report["conditioner"] = conditioner_stage.conditioner_report_section(lc_evaluation, lc_result, config,
                                                                                 trained)
            table = _report_table(report)
            write_report(run_dir.report_json, run_dir.report_text, report, table)
            log.info("\n" + table.rstrip())
            log.info(f"report: {run_dir.report_text}")
            if config.plot_mode in (0, 1):
                _conditioner_plots(config, run_dir, sweep, lc_evaluation, lc_result, model, log)
        runtime.barrier()
        return report if runtime.is_main else {}
    finally:
        log.close()


def _vae(config: RunConfig, sweep: PreparedSweep, runtime: Runtime, run_dir: RunDirectory, log: RunLog):
    """Train the VAE, or with --lc_only / a resumed run whose VAE is finished, load it."""
    finished = run_dir.vae_bundle.is_file() and (config.lc_only or (config.resume and _vae_finished(run_dir)))
    if config.lc_only or finished:
        path = run_dir.vae_bundle if finished else Path(config.end_to_end.vae_model_path)
        if not path.is_file():
            raise CheckpointError(
                f"--lc_only=1 needs a trained VAE: none at {run_dir.vae_bundle} (the --out folder) nor at "
                f"{path} (e2e_vae_model_path in condition.txt); train one first with --lc_only=0, "
                f"or point --out / e2e_vae_model_path at it")
        bundle = load_vae_bundle(path, runtime.device)
        if not np.array_equal(bundle.train_indices, sweep.train_indices):
            raise CheckpointError(f"{path}: the VAE was trained on another train/validation split of the cases "
                                  f"(validation_fraction, split_seed or Dim1 differ); restore those settings")
        require_matching(path, vae_must_match(bundle.config)["model"], vae_must_match(config)["model"], "VAE")
        log.info(f"VAE: using the trained model {path}")
        return bundle.model, None
    return vae_stage.train_vae(config, sweep, runtime, run_dir, log)


def _vae_finished(run_dir: RunDirectory) -> bool:
    """The VAE stage of this run ended (its bundle is this run's, not a leftover of an earlier one)."""
    last = run_dir.last_checkpoint("vae")
    return not last.is_file() or bool(load_state(last).get("finished", False))


def _report_table(report: Dict[str, Any]) -> str:
    vae = report["vae"]
    rows = []
    for model_name, label in (("vae", f"VAE ({vae['latent_numbers']} latent numbers)"),
                              ("pca", f"PCA ({vae['pca_components']} components)")):
        for split in ("train", "val"):
            rows.append((label, split, vae["relative_l2"][model_name][split]))
    text = ("Reconstruction of known cases: relative L2 error ||x - x_hat|| / ||x|| per case, physical units\n"
            + format_report_table(rows))
    if "conditioner" in report:
        lc = report["conditioner"]
        errors = lc["prediction_relative_l2"]
        name = f"{lc['architecture'].upper()} conditioner + decoder" + (" (end-to-end)" if lc["end_to_end"] else "")
        rows = [(name, "train", errors["conditioner"]["train"]), (name, "val", errors["conditioner"]["val"]),
                (f"POD ({lc['pod_gp_modes']} modes) + Gaussian process", "val", errors["pod_gp"]["val"]),
                ("nearest training design", "val", errors["nearest_neighbour"]["val"])]
        text += ("\nPrediction of designs from their " + ("parameters" if lc["input_type"] == "csv" else "images")
                 + ": relative L2 error per case, physical units\n" + format_report_table(rows))
    return text


def _vae_plots(config: RunConfig, run_dir: RunDirectory, sweep: PreparedSweep, evaluation, result: Optional[TrainingResult],
               log: RunLog) -> None:
    from modules.evaluation import plots

    show = config.plot_mode == 0
    plots.configure_backend(show)

    def target(name: str) -> Optional[Path]:
        return None if show else run_dir.plots / name

    if result is not None:
        plots.plot_loss_curves(result.history, target("vae_loss_curves.png"), "VAE training")
    plots.plot_error_histogram({"VAE": evaluation.vae_val, "PCA": evaluation.pca_val},
                               target("vae_vs_pca_errors.png"), "Validation reconstruction error")
    for label, position in vae_stage.plotted_positions(evaluation.vae_val).items():
        case = int(sweep.val_indices[position])
        truth = read_cases(sweep.array, [case], config.data)[0]
        plots.plot_dual_view(truth, evaluation.val_reconstructions[case], target(f"vae_{label}_case.png"),
                             f"VAE reconstruction, {label} validation case {case}",
                             coordinates=sweep.coordinates, relative_error=float(evaluation.vae_val[position]))
    if not show:
        log.info(f"plots: {run_dir.plots}")


def _conditioner_plots(config: RunConfig, run_dir: RunDirectory, sweep: PreparedSweep, evaluation,
                       result: Optional[TrainingResult], vae, log: RunLog) -> None:
    from modules.evaluation import plots

    show = config.plot_mode == 0

    def target(name: str) -> Optional[Path]:
        return None if show else run_dir.plots / name

    if result is not None:
        plots.plot_loss_curves(result.history, target("conditioner_loss_curves.png"), "Latent conditioner training")
    plots.plot_parity(evaluation.val_latents_true, evaluation.val_latents_predicted, target("latent_parity.png"),
                      "Predicted vs VAE latent codes, validation designs", num_main=vae.cfg.latent_dim_main)
    plots.plot_error_histogram({"conditioner + decoder": evaluation.errors_val, "POD + GP": evaluation.pod_gp_val,
                                "nearest design": evaluation.nearest_val},
                               target("prediction_errors.png"), "Validation prediction error")
    for label, position in vae_stage.plotted_positions(evaluation.errors_val).items():
        case = int(sweep.val_indices[position])
        truth = read_cases(sweep.array, [case], config.data)[0]
        plots.plot_dual_view(truth, evaluation.val_predictions[case], target(f"prediction_{label}_design.png"),
                             f"Prediction from the design alone, {label} validation design {case}",
                             coordinates=sweep.coordinates, relative_error=float(evaluation.errors_val[position]))
