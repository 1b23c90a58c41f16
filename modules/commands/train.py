"""The training command: VAE, then the latent conditioner, then the report and plots."""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from modules.commands.run_figures import RunFigures, require_plot_backend
from modules.config.compatibility import reused_vae_must_match
from modules.config.schema import RunConfig
from modules.data.demo_request import ensure_demo_data
from modules.data.design_features import design_features
from modules.data.designs import load_design_array, load_parameter_names
from modules.data.log_spacing import describe_columns, log_columns, spread_text
from modules.models.design_spread import DesignSpread, fit_design_spread
from modules.models.vae import HierarchicalVAE
from modules.training.projected_training import ProjectedSweep
from modules.data.prepared_sweep import PreparedSweep, prepare_sweep
from modules.errors import CheckpointError, SimulGenError
from modules.evaluation.band_coverage import BAND_SAMPLES, band_coverage, calibrate_band
from modules.evaluation.conditioner_evaluation import conditioner_report_section, evaluate_conditioner
from modules.evaluation.report import format_run_report, write_report
from modules.evaluation.vae_evaluation import evaluate_vae, vae_report_section
from modules.runtime import progress
from modules.runtime.distributed import Runtime, setup_runtime, shutdown_runtime
from modules.storage.run_directory import RunDirectory
from modules.storage.state_files import load_state, require_matching, write_atomically
from modules.surrogate.surrogate import Surrogate
from modules.surrogate.conditioner_bundle import save_conditioner_bundle
from modules.surrogate.vae_bundle import load_vae_bundle
from modules.training import conditioner_stage, vae_stage
from modules.training.loop import TrainingResult
from modules.training.run_log import RunLog
from modules.training.time_budget import TimeBudget


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
        config = replace(config, resume=True)
    runtime = setup_runtime(config.train.device, config.train.amp, config.use_ddp)
    try:
        with progress.shown_during(show_progress and runtime.is_main):
            return _run(config, notices, runtime, show_progress)
    finally:
        shutdown_runtime(runtime)


def _run(config: RunConfig, notices: List[str], runtime: Runtime, show_progress: bool) -> Dict[str, Any]:
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
            require_plot_backend(config)
            ensure_demo_data(config.data, base_dir)  # one writer; the other ranks find the files after the barrier
        runtime.barrier()
        sweep = prepare_sweep(config, base_dir, runtime)
        budget = TimeBudget.of_minutes(config.train.training_minutes)
        if budget.limited:
            log.info(f"training time budget: {config.train.training_minutes:g} min for the VAE and the conditioners "
                     f"(training_minutes); each stage keeps the epochs its share affords at its measured pace")
        copies = f", one copy per process ({runtime.world_size}); --load_all=0 streams instead" \
            if runtime.distributed else ""
        if runtime.is_main and not config.resume:  # a resumed run keeps the settings file of the run it continues
            write_atomically(run_dir.config_json,
                             lambda stream: stream.write(json.dumps(config.to_dict(), indent=2) + "\n"), "w")
        log.info(f"data: {sweep.path} ({config.data.num_cases} cases; window {config.data.window_text}; "
                 f"{'in memory' + copies if config.data.load_all else 'streamed from disk' + _cached(sweep)})")
        if sweep.triangles is not None:
            log.info(f"mesh maps and VTU files: {sweep.triangles.describe()}")
        # What each trained timestep stands for: its stored timestep in the sweep (Dim2_red / Dim2_red_mode).
        report: Dict[str, Any] = {"data": str(sweep.path), "output_dir": str(run_dir.root),
                                  "time_indices": list(config.data.timestep_indices)}
        designs = load_design_array(config.conditioner, base_dir, config.data.num_cases)
        model, result, projection, log_columns = _vae(config, sweep, runtime, run_dir, log, designs, budget)
        surrogate = Surrogate(model, sweep.scaler, runtime.device, config.data, sweep.coordinates,
                              None if sweep.triangles is None else sweep.triangles.triangles)
        latents = surrogate.encode_coefficients(projection.coefficients)  # not a second pass over the sweep
        figures = RunFigures(config, run_dir, sweep, log) if runtime.is_main and config.plot_mode in (0, 1) else None
        if runtime.is_main:
            vae_stage.save_latents(run_dir, latents, sweep)
            log.info(f"latent vectors: {run_dir.latents}")
        trained, lc_result = conditioner_stage.train_conditioner(
            config, sweep, model, latents, runtime, run_dir, log, designs, projection.coefficients, budget,
            load_parameter_names(config.conditioner, base_dir), log_columns)
        surrogate = surrogate.with_conditioner(trained)
        if runtime.is_main:
            # After the conditioners: validation may have picked one of their decoders to reconstruct.
            started = time.perf_counter()
            log.info(f"report: reconstructing every case through {surrogate.reconstruction_decoder_text} (at most "
                     f"{config.model.refine_steps} L-BFGS refinement iterations each) and fitting PCA with "
                     f"{model.flat_latent_dim} components...")
            evaluation = evaluate_vae(surrogate, sweep, config.data, _known_norms(surrogate, projection, config))
            log.info(f"report: reconstruction measured in {time.perf_counter() - started:.1f} s")
            report["vae"] = vae_report_section(evaluation, _summary(result), surrogate, sweep)
            if figures is not None:
                figures.vae(evaluation, result)
            surrogate = _calibrated_band(surrogate, designs, projection.coefficients, sweep, config, run_dir, model,
                                         log)
            started = time.perf_counter()
            log.info(f"report: predicting the held-out designs, fitting POD + GP ({model.flat_latent_dim} Gaussian "
                     f"processes) and the nearest-design baseline...")
            lc_evaluation = evaluate_conditioner(surrogate, designs, latents, sweep, config, evaluation.case_gram,
                                                 _predicted_norms(projection, config))
            log.info(f"report: prediction measured in {time.perf_counter() - started:.1f} s")
            report["conditioner"] = conditioner_report_section(lc_evaluation, _summary(lc_result), config, surrogate)
            report["conditioner"]["band"] = _band_report(surrogate, designs, sweep, config)
            table = format_run_report(report)
            write_report(run_dir.report_json, run_dir.report_text, report, table)
            log.info("\n" + table.rstrip())
            log.info(f"report: {run_dir.report_text}")
            if figures is not None:
                figures.conditioner(lc_evaluation, lc_result, model.cfg.latent_dim_main)
        runtime.barrier()
        return report if runtime.is_main else {}
    finally:
        log.close()


def _vae(config: RunConfig, sweep: PreparedSweep, runtime: Runtime, run_dir: RunDirectory, log: RunLog,
         designs: np.ndarray, budget: TimeBudget
         ) -> Tuple[HierarchicalVAE, Optional[TrainingResult], ProjectedSweep, List[int]]:
    """Train the VAE, or with --lc_only / a resumed run whose VAE is finished, load it; with every case's
    projection on its spatial modes (what the conditioner trains on end to end), and the parameter columns read
    as logarithms (log_parameters: a VAE's design prior and the conditioner on it must read the same)."""
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
        require_matching(path, reused_vae_must_match(bundle.config), reused_vae_must_match(config), "VAE")
        log.info(f"VAE: using the trained model {path}")
        columns = _log_columns(config, designs, sweep, log, bundle.design_log_columns
                               if bundle.model.design_features > 0 else None)
        return (bundle.model, None, vae_stage.reused_projection(bundle.model, path, sweep, config, runtime, log),
                columns)
    columns = _log_columns(config, designs, sweep, log)
    features = design_features(designs, sweep.train_indices, columns) if config.uses_design_prior else None
    return (*vae_stage.train_vae(config, sweep, runtime, run_dir, log, features, budget, columns), columns)


def _log_columns(config: RunConfig, designs: np.ndarray, sweep: PreparedSweep, log: RunLog,
                 design_prior_columns: Optional[Sequence[int]] = None) -> List[int]:
    """log_parameters resolved on the training designs and logged; design_prior_columns: those a reused VAE's
    design prior read (they win: the conditioner feeds the prior its inputs)."""
    if designs.ndim != 2:  # images: no parameter columns (a prior trained on parameters is not fed them)
        return []
    amplitude = config.conditioner.amplitude_parameter
    keep_linear = [int(amplitude) - 1] if amplitude.isdigit() else []
    columns = log_columns(config.conditioner.log_parameters, designs, sweep.train_indices, keep_linear)
    if design_prior_columns is not None and list(design_prior_columns) != columns:
        log.info(f"design inputs: log_parameters {config.conditioner.log_parameters} would read "
                 f"{describe_columns(columns)} as logarithms, but the reused VAE's design prior read "
                 f"{describe_columns(design_prior_columns)}: the conditioner reads them as the prior did")
        return list(design_prior_columns)
    if columns:
        read_as = "their logarithms" if len(columns) > 1 else "its logarithm"
        log.info(f"design inputs: {describe_columns(columns)} read as {read_as} (log_parameters "
                 f"{config.conditioner.log_parameters}{spread_text(designs, sweep.train_indices, columns)})")
    return columns


def _known_norms(surrogate: Surrogate, projection: ProjectedSweep, config: RunConfig
                 ) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """The VAE's reconstruction errors from every case's coefficients (no read of the sweep), where they equal
    the fields' errors: with the physical node weights the basis is orthonormal in (projected_training)."""
    if not config.train.physical_weighting:
        return None
    return lambda indices: projection.physical_squared_norms(
        indices, surrogate.reconstruct_coefficients(projection.coefficients[torch.as_tensor(indices)]))


def _predicted_norms(projection: ProjectedSweep, config: RunConfig
                     ) -> Optional[Callable[[Surrogate, np.ndarray, torch.Tensor], np.ndarray]]:
    """The predictions' errors from every case's coefficients, as _known_norms (the prediction decoder reads
    out through the same frozen basis)."""
    if not config.train.physical_weighting:
        return None
    return lambda surrogate, indices, flat: projection.physical_squared_norms(indices,
                                                                              surrogate.decode_coefficients(flat))


def _calibrated_band(surrogate: Surrogate, designs: np.ndarray, coefficients: torch.Tensor, sweep: PreparedSweep,
                     config: RunConfig, run_dir: RunDirectory, model: HierarchicalVAE, log: RunLog) -> Surrogate:
    """Fit the band's design spread (parameter designs), calibrate the --samples band on the validation cases and
    save both with the conditioner."""
    started = time.perf_counter()
    spread = _band_spread(surrogate, designs, coefficients, sweep)
    surrogate = replace(surrogate, conditioner=replace(surrogate.conditioner, band_spread=spread))
    band = calibrate_band(surrogate, designs, sweep.val_indices, sweep.array, config.data)
    trained = replace(surrogate.conditioner, band=band)
    save_conditioner_bundle(run_dir.conditioner_bundle, trained, config, model)
    widens = "" if spread is None else (" x the design's width (a Gaussian process's posterior std, the validation "
                                        "designs' mean = 1)")
    log.info(f"predict --samples: band = prediction +- {band.scale:.3g} x sampled std{widens}, calibrated "
             f"(split-conformal) to cover {band.nominal:.0%} of the values of the {band.cases} validation cases "
             f"({time.perf_counter() - started:.1f} s)")
    return replace(surrogate, conditioner=trained)  # the band changes no decoder: the copies stay


def _band_spread(surrogate: Surrogate, designs: np.ndarray, coefficients: torch.Tensor,
                 sweep: PreparedSweep) -> Optional[DesignSpread]:
    """The band's design spread for parameter designs with enough training cases to fit a process, else None."""
    conditioner = surrogate.conditioner
    if conditioner.input_kind != "csv" or len(sweep.train_indices) < 3 or len(sweep.val_indices) == 0:
        return None
    inputs = conditioner.model_inputs(designs)
    return fit_design_spread(inputs, coefficients, sweep.train_indices, sweep.val_indices)


def _band_report(surrogate: Surrogate, designs: np.ndarray, sweep: PreparedSweep, config: RunConfig) -> Dict[str, Any]:
    band = surrogate.conditioner.band
    # The validation cases' coverage came with the calibration on them: they are not decoded and read again.
    known = {} if band.covered_on_calibration is None else {"val": band.covered_on_calibration}
    splits = {"val": sweep.val_indices, **({"test": sweep.test_indices} if len(sweep.test_indices) else {})}
    coverage = {**known, **band_coverage(surrogate, designs, {split: indices for split, indices in splits.items()
                                                                if split not in known}, sweep.array, config.data)}
    return {"nominal": band.nominal, "scale": band.scale, "samples": BAND_SAMPLES,
            "calibrated_on": f"the {band.cases} validation cases, split-conformal on |truth - prediction| / std",
            "design_spread": surrogate.conditioner.band_spread is not None,
            "coverage": coverage}


def _vae_finished(run_dir: RunDirectory) -> bool:
    """The VAE stage of this run ended (its bundle is this run's, not a leftover of an earlier one)."""
    last = run_dir.last_checkpoint("vae")
    return not last.is_file() or bool(load_state(last).get("finished", False))




def _cached(sweep: PreparedSweep) -> str:
    """', up to 120 cases kept in a 0.50 GiB shared cache' when cache_cases is on."""
    caches = [dataset.cache for dataset in (sweep.train_set, sweep.val_set) if dataset.cache is not None]
    if not caches:
        return ""
    slots = sum(cache.slots for cache in caches)
    gib = sum(cache.slots * cache.case_bytes for cache in caches) / 2 ** 30
    return f", up to {slots} cases kept after their first read in a {gib:.2f} GiB shared cache (cache_cases)"


def _summary(result: Optional[TrainingResult]) -> Optional[Dict[str, Any]]:
    return None if result is None else result.summary()
