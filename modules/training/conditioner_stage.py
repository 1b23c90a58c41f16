"""Stage 2 of a run: the latent conditioner (design -> latent code), trained on the VAE's latents or end to end
through the decoder, and saved with what prediction needs."""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from modules.config.schema import RunConfig
from modules.data.input_scaler import InputScaler
from modules.data.designs import DesignDataset, scaled_inputs
from modules.data.image_pca import ImagePCA
from modules.data.prepared_sweep import PreparedSweep
from modules.config.conditioner_rules import resolve_architecture
from modules.models.conditioners import build_conditioner, count_parameters
from modules.models.ensemble import ConditionerEnsemble, DecoderEnsemble, decoder_copy
from modules.models.vae import HierarchicalVAE
from modules.runtime import memory
from modules.runtime.devices import evaluation_mode
from modules.runtime.distributed import Runtime
from modules.storage.run_directory import RunDirectory
from modules.surrogate.conditioner_bundle import (TrainedConditioner, model_inputs, predict_latents,
                                                  save_conditioner_bundle)
from modules.surrogate.surrogate import decoder_text
from modules.training.augmentation import DesignAugmenter
from modules.training.checkpointing import Checkpointer
from modules.training.loop import LoopSettings, Trainer, TrainingResult
from modules.training.time_budget import MIN_MEMBER_EPOCH_FRACTION, TimeBudget, affords_another_member
from modules.models.amplitude import AmplitudeScaling
from modules.models.case_pca import CasePCA
from modules.training.amplitude_choice import choose_amplitude, reference_fields
from modules.training.pod_gp_blend_fit import fit_pod_gp_blend
from modules.surrogate.inverse_design import DesignPath
from modules.training.reconstruction_choice import design_reconstruction_error, pick_reconstruction_decoder
from modules.training.objectives import ConditionedDecoder, ConditionerObjective, EndToEndObjective
from modules.training.run_log import RunLog


def _settings(config: RunConfig, on_design_prior: bool) -> LoopSettings:
    hint = f"lower latent_conditioner_lr (now {config.conditioner.learning_rate:g})"
    if config.end_to_end.enabled:
        hint += f" or LC_alpha (now {config.end_to_end.recon_weight:g})"
    # Started at the design prior's prediction, the conditioner keeps that start unless an epoch beats it.
    return LoopSettings.for_stage(config, "conditioner", divergence_hint=hint, evaluate_start=on_design_prior)


def starts_on_design_prior(vae: HierarchicalVAE, inputs: torch.Tensor, fresh_decoder: bool = False) -> bool:
    """Whether the conditioner learns a correction to the VAE's design-prior prediction: it reads what the prior
    reads (standardised parameters) and decodes with the VAE's decoder or a fine-tuned copy of it. On the wave
    sweep the design prior alone predicted held-out designs with 0.343 pooled error against 0.425 for a
    conditioner trained from scratch on the VAE's latents (README, ablations). A fresh prediction decoder
    (`fresh_decoder`) gives the prior's code no meaning: there it was only a frozen offset, and on front-dev one
    member predicted the test designs at 0.633 with it against 0.495 without it (the same VAE and seed; README)."""
    return (not fresh_decoder and vae.design_prior is not None and inputs.dim() == 2
            and inputs.shape[1] == vae.design_features)


def zero_output_heads(conditioner: torch.nn.Module) -> None:
    """The conditioner's last layers at zero: its correction starts at nothing."""
    with torch.no_grad():
        for head in (conditioner.heads.main_head, conditioner.heads.hier_head):
            if head is not None:
                head.weight.zero_()
                head.bias.zero_()


def build(config: RunConfig, vae: HierarchicalVAE, in_channels: int, member: int = 0) -> torch.nn.Module:
    """The conditioner network, seeded per ensemble member (member 0: as a run without an ensemble)."""
    torch.manual_seed(config.train.seed + 1 + 1000 * member)
    layout = vae.layout
    return build_conditioner(config.conditioner, layout.main, layout.hier, layout.levels, in_channels=in_channels,
                             spectral_norm=config.model.spectral_norm)


def train_conditioner(config: RunConfig, sweep: PreparedSweep, vae: HierarchicalVAE, latents: Dict[str, np.ndarray],
                      runtime: Runtime, run_dir: RunDirectory, log: RunLog, designs: np.ndarray,
                      coefficients: torch.Tensor, budget: Optional[TimeBudget] = None,
                      parameter_names: Optional[List[str]] = None, log_columns: Sequence[int] = ()
                      ) -> Tuple[TrainedConditioner, TrainingResult]:
    """Train on the saved latents (or end to end through the decoder, on every case's mode coefficients
    [num_cases, C, T] in units of the basis scale); returns the conditioner and its history. log_columns: the
    parameter columns read as logarithms (data/log_spacing.py, resolved by the caller with the VAE's)."""
    scaler = InputScaler().fit(designs, sweep.train_indices, log_columns)
    # PCA after the scaler: per-channel standardisation weighs colour channels equally before projecting.
    image_pca = (ImagePCA.fit(scaled_inputs(designs, scaler), sweep.train_indices,
                              config.conditioner.image_pca_components)
                 if config.conditioner.image_pca_components > 0 else None)
    inputs = model_inputs(designs, scaler, image_pca)
    targets = torch.as_tensor(latents["flat"], dtype=torch.float32)
    in_channels = designs.shape[1] if designs.ndim == 4 else 1
    amplitude = _amplitude(config, sweep, vae, designs, inputs, scaler, coefficients, log)
    # With an amplitude parameter the decoders learn unit fields, the loss stays on the fields (ConditionedDecoder
    # multiplies by r); the blend's processes predict the unit fields.
    unit_coefficients = coefficients if amplitude is None else amplitude.to_unit(coefficients, amplitude.ratios(inputs))
    members = config.conditioner.ensemble_members
    # Each member trains its decoder in its own copy of the VAE: the VAE keeps its decoder for reconstruction.
    vaes = [decoder_copy(vae) for _ in range(members)]
    e2e = config.end_to_end.enabled
    fresh = config.end_to_end.prediction_decoder == "fresh"
    on_prior = starts_on_design_prior(vae, inputs, fresh_decoder=e2e and fresh)
    if amplitude is not None and fresh and vae.case_pca:
        # Measured on the demo (seeds 0 / 1): the networks' validation MSE 0.0041 / 0.0038 against 0.0048 / 0.0046
        # with the fields' PCA there; the tool's prediction 0.0650 / 0.0646 against 0.0656 / 0.0654.
        count = start_linear_paths_at_pca(vaes, unit_coefficients[torch.as_tensor(sweep.train_indices)])
        log.info(f"conditioner: the prediction decoders' linear path starts at PCA of the training unit fields "
                 f"({count} components)")
    # Without end-to-end training the conditioner regresses the latents; on the design prior, what the prior misses.
    regressed = targets
    if on_prior and not e2e:
        with torch.no_grad():
            regressed = targets - vae.design_latent(inputs.to(runtime.device)).float().cpu()
    train_set = DesignDataset(inputs, regressed, sweep.train_indices, coefficients if e2e else None)
    val_set = DesignDataset(inputs, regressed, sweep.val_indices, coefficients if e2e else None)
    mode = ("end-to-end with its own prediction decoder (fresh start; the VAE keeps its decoder)" if fresh else
            "end-to-end through the decoder" if e2e else "on the VAE's latent vectors") + \
        (", as a correction to the VAE's design-prior prediction (zero at the start)" if on_prior and not fresh else "")
    projected = ("" if image_pca is None else f" projected onto {image_pca.num_components} whitened PCA components "
                 f"({image_pca.variance_explained:.1%} of the training images' variance)")
    conditioners, results, paths = [], [], []
    # Members train one after another, each exactly as a run of its own seed (weights and batch order): trained
    # side by side on the same batches, the members' mean was no better than a single run (README, ablations).
    for member in range(members):
        if member > 0 and not _affords_member(budget, results[-1], config.conditioner.epochs, member, runtime, log):
            break
        conditioner = build(config, vae, in_channels, member)
        if hasattr(conditioner, "fit_input_statistics"):  # from the training designs alone, before any epoch
            conditioner.fit_input_statistics(inputs[torch.as_tensor(sweep.train_indices)])
        if on_prior:
            zero_output_heads(conditioner)
        if e2e:
            model: torch.nn.Module = ConditionedDecoder(conditioner, vaes[member], config.end_to_end.finetune_decoder,
                                                        on_prior, fresh_decoder=fresh, amplitude=amplitude)
            objective: Any = EndToEndObjective(config.end_to_end, DesignAugmenter(config.augmentation))
        else:
            weights = field_sensitivity(vae, targets[torch.as_tensor(sweep.train_indices)])
            model, objective = conditioner, ConditionerObjective(weights, DesignAugmenter(config.augmentation))
        if member == 0:
            ensemble = "" if members == 1 else (f"; {members} of them, each with its own decoder, keeping those whose "
                                                "mean predicts the validation designs best")
            log.info(f"conditioner: {resolve_architecture(config.conditioner)} with {count_parameters(conditioner):,} "
                     f"parameters, {config.conditioner.input_type} input {list(designs.shape[1:])}{projected}, "
                     f"trained {mode}{ensemble}")
        allowance = math.inf if budget is None else budget.member_allowance(members - member,
                                                                            config.conditioner.epochs)
        results.append(_fit_member(config, model, objective, on_prior, member, runtime, run_dir, log, train_set,
                                   val_set, allowance))
        conditioners.append(conditioner)
        paths.append(model)
    trained_members = len(paths)
    kept = list(range(trained_members))
    if trained_members > 1:
        kept = _keep_members(paths, val_set, runtime.device, log)
    conditioners, vaes = [conditioners[i] for i in kept], [vaes[i] for i in kept]
    conditioner, result = conditioners[0], results[kept[0]]
    decoder: torch.nn.Module = vaes[0]
    if len(kept) > 1:
        conditioner, decoder = ConditionerEnsemble(conditioners), DecoderEnsemble(vaes)
    conditioner.eval()
    prior = decoder if on_prior else None
    val_inputs = inputs[sweep.val_indices]
    with evaluation_mode(decoder):
        predicted = predict_latents(conditioner, val_inputs, runtime.device, prior=prior)
        network_validation = _decoded(decoder, predicted, runtime.device)
    # Images have no design vector: the blend's processes read the conditioners' codes of the designs instead.
    codes = predict_latents(conditioner, inputs, runtime.device, prior=prior) if inputs.dim() != 2 else None
    to_fields = None if amplitude is None else partial(amplitude.from_unit, ratios=amplitude.ratios(val_inputs))
    blend, reason = fit_pod_gp_blend(config.conditioner.pod_gp_blend, inputs, unit_coefficients, sweep.train_indices,
                                     sweep.val_indices, network_validation, vae.flat_latent_dim, codes, to_fields)
    log.info(f"conditioner: {reason}")
    # An ensemble's code is its members' codes side by side, each compared with the VAE's code; with the blend,
    # the Gaussian processes' scores follow, compared with the validation cases' own scores.
    residual = _residual_std(predicted, targets[sweep.val_indices].repeat(1, len(kept)))
    if blend is not None:
        with torch.no_grad():
            residual = torch.cat([residual, _residual_std(blend.scores_of(val_inputs, predicted),
                                                          blend.pca.scores(unit_coefficients[sweep.val_indices])
                                                          .float())])
    if amplitude is not None:  # r is known exactly: no draws around it
        residual = torch.cat([residual, residual.new_zeros(1)])
    # The decoder is all that end-to-end training changes in the VAE (the encoder, design prior and basis stay
    # the VAE bundle's): only it is saved, not the whole VAE again (136 MB, 97 of them the basis, at seed size).
    trains_decoders = e2e and config.end_to_end.finetune_decoder
    decoder_weights = _decoder_state(vaes[0]) if trains_decoders else None
    member_decoders = [_decoder_state(other) for other in vaes[1:]]
    trained = TrainedConditioner(conditioner, scaler, config.conditioner.input_type, in_channels, residual,
                                 decoder_weights, config.conditioner, image_pca, on_design_prior=on_prior,
                                 member_decoder_weights=member_decoders, members_trained=trained_members,
                                 members_kept=kept, blend=blend, amplitude=amplitude,
                                 training_designs=(inputs[sweep.train_indices].detach().cpu().float().clone()
                                                   if config.conditioner.input_type == "csv" else None),
                                 parameter_names=parameter_names)
    if trains_decoders and config.end_to_end.reconstruction_decoder == "auto":
        trained = _reconstruction_choice(trained, vae, vaes, decoder, kept, inputs, coefficients, sweep, runtime, log)
    if runtime.is_main:
        save_conditioner_bundle(run_dir.conditioner_bundle, trained, config, vae)
    runtime.barrier()
    best = ", ".join(f"{member.best_val_loss:.4g} at epoch {member.best_epoch + 1}" for member in results)
    log.info(f"conditioner: best validation loss {best}; saved {run_dir.conditioner_bundle}")
    return trained, result


def _amplitude(config: RunConfig, sweep: PreparedSweep, vae: HierarchicalVAE, designs: np.ndarray,
               inputs: torch.Tensor, scaler: InputScaler, coefficients: torch.Tensor, log: RunLog
               ) -> Optional[AmplitudeScaling]:
    """amplitude_parameter resolved (training/amplitude_choice.py) and logged. It needs a parameter table (images
    give no value to multiply by), end-to-end training (the loss is on the field) and an affine node scaler
    (the robust scaler clips)."""
    setting = config.conditioner.amplitude_parameter
    if setting == "none":
        return None
    if config.conditioner.input_type == "image" or not config.end_to_end.enabled or sweep.scaler.clipped:
        why = ("design images" if config.conditioner.input_type == "image" else
               "no end-to-end training" if not config.end_to_end.enabled else "scaler robust clips the fields")
        log.info(f"conditioner: amplitude_parameter {setting} does not apply ({why}): fields predicted as they are")
        return None
    started = time.perf_counter()
    references = reference_fields(vae.basis, sweep.scaler, vae.num_timesteps)
    amplitude, reason = choose_amplitude(setting, designs, inputs, scaler, coefficients, sweep.train_indices,
                                         sweep.val_indices, references, vae.flat_latent_dim)
    log.info(f"conditioner: {reason}; {time.perf_counter() - started:.1f} s")
    return amplitude


def start_linear_paths_at_pca(vaes: List[HierarchicalVAE], train_coefficients: torch.Tensor) -> int:
    """Load PCA of train_coefficients [cases, C, T] into each VAE copy's case PCA path; returns its components.

    The fresh prediction decoders keep that path's frozen linear readout (objectives.py); it holds the training
    fields' PCA, while with an amplitude parameter the decoders give unit fields, whose PCA belongs there."""
    pca = CasePCA.fit(train_coefficients, vaes[0].layout.flat_size)
    for copy in vaes:
        pca.load_into(copy.case_projection, copy.decoder.case_readout)
    return pca.count


def _affords_member(budget: Optional[TimeBudget], previous: TrainingResult, epochs: int, member: int,
                    runtime: Runtime, log: RunLog) -> bool:
    """Whether member `member` (0-based, after the first) trains: what the time budget leaves affords
    MIN_MEMBER_EPOCH_FRACTION of its epochs at the previous member's pace (every rank the same answer)."""
    if budget is None or not budget.limited:
        return True
    left = runtime.all_reduce_mean({"left": budget.seconds_left()})["left"]
    if affords_another_member(left, previous.seconds_per_epoch, epochs):
        return True
    log.info(f"conditioner: member {member + 1} and later not trained: the training time budget (training_minutes) "
             f"leaves {left:.0f} s, {left / (epochs * previous.seconds_per_epoch):.0%} of a member's {epochs} epochs "
             f"at {previous.seconds_per_epoch:.2f} s per epoch (a member trains with at least "
             f"{MIN_MEMBER_EPOCH_FRACTION:.0%}: members cut short predict far worse)")
    return False


def _reconstruction_choice(trained: TrainedConditioner, vae: HierarchicalVAE, decoders: Sequence[HierarchicalVAE],
                           network_decoder: torch.nn.Module, kept: Sequence[int], inputs: torch.Tensor,
                           coefficients: torch.Tensor, sweep: PreparedSweep, runtime: Runtime,
                           log: RunLog) -> TrainedConditioner:
    """`trained` with what reconstructs best on the validation cases: the VAE's own decoder, a kept prediction
    decoder (`decoders`, the kept members' in `kept` order; reconstruction_member, with its codes of the training
    designs as second starts), or, for parameter designs of at most the VAE's latent numbers, inverse design
    through the whole prediction path (reconstructs_by_design; the training designs are its starts)."""
    started = time.perf_counter()
    val_coefficients = coefficients[torch.as_tensor(sweep.val_indices)]
    train_inputs = inputs[sweep.train_indices]
    prior = network_decoder if trained.on_design_prior else None
    # Each prediction decoder's codes of the training designs: its second refinement starts (refinement.py).
    member_starts = list(predict_latents(trained.model, train_inputs, runtime.device, prior=prior)
                         .split(vae.flat_latent_dim, dim=1))
    member, errors = pick_reconstruction_decoder(vae, decoders, val_coefficients, runtime.device, member_starts)
    names = [decoder_text("vae")] + [decoder_text(f"conditioner {number + 1}") for number in kept]
    chosen = names[0 if member is None else member + 1]
    measured = ", ".join(f"{name} {error:.4g}" for name, error in zip(names, errors))
    by_design = False
    if trained.training_designs is not None and inputs.shape[1] <= vae.flat_latent_dim:
        path = DesignPath(trained.predictor, trained.prediction_decoder(network_decoder), trained.on_design_prior)
        error = design_reconstruction_error(path, val_coefficients, trained.training_designs, vae.cfg.refine_steps,
                                            runtime.device)
        measured += f", {decoder_text('design')} {error:.4g} ({inputs.shape[1]} numbers)"
        by_design = error < min(errors)  # strictly better: the decoders keep ties
        chosen = decoder_text("design") if by_design else chosen
    log.info(f"reconstruction: through {chosen} (refined codes, relative error on the {len(val_coefficients)} "
             f"validation cases in the basis' units: {measured}; {time.perf_counter() - started:.1f} s)")
    if by_design:
        return dataclasses.replace(trained, reconstructs_by_design=True)
    if member is None:
        return trained
    return dataclasses.replace(trained, reconstruction_member=member,
                               reconstruction_starts=member_starts[member].clone())


@torch.no_grad()
def best_subset(member_predictions: Sequence[torch.Tensor], truth: torch.Tensor) -> Tuple[List[int], float]:
    """The members (sorted indices) whose mean prediction has the smallest mean squared error against `truth`,
    over every non-empty subset (fewer members win ties), and that error. On the development sweeps the
    validation cases ranked the members as the test cases did, and one member of three can be far off
    (front-dev: 0.466 / 0.503 / 0.622 test error, their mean 0.486; README, ablations)."""
    best: Tuple[List[int], float] = ([], math.inf)
    for size in range(1, len(member_predictions) + 1):
        for subset in itertools.combinations(range(len(member_predictions)), size):
            error = _mean_squared_error([member_predictions[i] for i in subset], truth)
            if error < best[1]:
                best = (list(subset), error)
    return best


def _mean_squared_error(predictions: Sequence[torch.Tensor], truth: torch.Tensor) -> float:
    """Of the predictions' mean."""
    return ((torch.stack(list(predictions)).mean(dim=0) - truth) ** 2).mean().item()


def _keep_members(paths: Sequence[torch.nn.Module], val_set: DesignDataset, device: torch.device,
                  log: RunLog) -> List[int]:
    """The ensemble's members worth keeping: best_subset on the validation cases' mode coefficients (in basis
    units, where the squared error is the physically weighted field error up to a constant)."""
    predictions = []
    for path in paths:
        with evaluation_mode(path):
            predictions.append(path(val_set.inputs.to(device))[1].float().cpu())
    kept, error = best_subset(predictions, val_set.coefficients)
    alone = ", ".join(f"{_mean_squared_error([p], val_set.coefficients):.4g}" for p in predictions)
    everyone = _mean_squared_error(predictions, val_set.coefficients)
    log.info(f"conditioner: keeping member{'s' if len(kept) > 1 else ''} {', '.join(str(i + 1) for i in kept)} of "
             f"{len(paths)}: validation MSE of their mean {error:.4g} (all {len(paths)}: {everyone:.4g}; each: {alone})")
    return kept


def member_stage(member: int) -> str:
    """The checkpoint files' stage name of an ensemble member: 'conditioner' for the first, as without one."""
    return "conditioner" if member == 0 else f"conditioner_member{member + 1}"


def _fit_member(config: RunConfig, model: torch.nn.Module, objective: Any, on_prior: bool, member: int,
                runtime: Runtime, run_dir: RunDirectory, log: RunLog, train_set: DesignDataset,
                val_set: DesignDataset, allowance_seconds: float) -> TrainingResult:
    """Train one member (resumed from its own checkpoint when the run is resumed) in at most about
    `allowance_seconds` (its part of the time budget)."""
    members, stage = config.conditioner.ensemble_members, member_stage(member)
    settings = _settings(config, on_prior)
    if members > 1:
        later = members - 1 - member
        settings = dataclasses.replace(
            settings, name=stage, seed=settings.seed + 1000 * member,
            # Under a time budget the later members train only if it affords them (time_budget.py).
            still_to_come=(f"+ {'up to ' if config.train.training_minutes > 0 else ''}{later} more "
                           f"member{'s' if later > 1 else ''} and the report") if later else "+ the report")
    trainer = Trainer(model, objective, settings, runtime, log,
                      Checkpointer.for_stage(run_dir, "conditioner", config, runtime, files=stage), allowance_seconds)
    if config.resume and run_dir.last_checkpoint(stage).is_file():
        trainer.resume(run_dir.last_checkpoint(stage))
    return trainer.fit(train_set, val_set, num_workers=0)


@torch.no_grad()
def field_sensitivity(vae: HierarchicalVAE, train_latents: torch.Tensor) -> torch.Tensor:
    """[flat latent] how strongly each latent number moves the decoded field (squared, in the VAE's own
    metric: its mode coefficients), normalised to mean 1: a latent error the decoder ignores should cost the
    conditioner little.

    Finite differences of one standard deviation around the mean training latent, one batched decode."""
    vae.eval()
    device = next(vae.parameters()).device
    mean, spread = train_latents.mean(dim=0), train_latents.std(dim=0).clamp_min(1e-6)
    latents = (mean[None] + torch.diag(spread)).to(device)
    base = vae.decode_flat(mean[None].to(device), projected=True).float()  # [1, C, T]
    parts = [((vae.decode_flat(batch, projected=True).float() - base) ** 2).sum(dim=(1, 2)).cpu()
             for batch in memory.chunks(latents, memory.items_per_chunk(base.numel() * 4, memory.FIELD_BATCH_BYTES))]
    sensitivity = torch.cat(parts) / spread.cpu() ** 2
    return (sensitivity / sensitivity.mean().clamp_min(1e-30)).clamp_min(1e-3)


def _decoded(decoder: torch.nn.Module, codes: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Mode coefficients [k, C, T] (basis units) of flat codes, a chunk at a time."""
    with torch.no_grad():
        return torch.cat([decoder.decode_flat(chunk.to(device), projected=True).float().cpu()
                          for chunk in memory.chunks(codes, 256)])


def _decoder_state(vae: HierarchicalVAE) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in vae.decoder.state_dict().items()}


def _residual_std(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (predicted - targets).std(dim=0, unbiased=len(targets) > 1).clamp_min(1e-6)
