"""One step function per training mode: batch in, (loss, metrics) out.

The trainer calls `objective(model, batch, epoch)` under autocast; the model may
be wrapped in DistributedDataParallel, so objectives only call it (forward).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import torch

from modules.training.augmentation import DesignAugmenter, FieldAugmenter
from modules.config.schema import EndToEndConfig, TrainConfig
from modules.models.amplitude import AmplitudeScaling
from modules.models.vae import VAEOutput
from modules.training.losses import design_loss, kl_weight, reconstruction_loss, vae_loss
from modules.training.physics_loss import PhysicsLoss


class VAEObjective:
    """alpha x (reconstruction + physics terms) + beta(epoch) x KL of every level, averaged over Recon_iter
    samples, on full fields (the path for losses and options that need them: Loss_type 2-4, augmentation,
    physics terms; otherwise training/projected_training.py gives the same loss on mode coefficients). The
    physics terms sit inside alpha so that their weights are shares of the reconstruction whatever alpha is.
    With designs (the VAE's design prior), losses.design_loss is added."""

    def __init__(self, train: TrainConfig, node_weights: Optional[torch.Tensor] = None,
                 to_physical: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                 augmenter: Optional[FieldAugmenter] = None, physics: Optional[PhysicsLoss] = None,
                 designs: Optional[torch.Tensor] = None, energy_per_element: float = 1.0):
        """to_physical: (offset [N], factor [N]) with physical = offset + factor * scaled; when given, the
        epoch is selected on the report's metric, the mean relative L2 error per case in physical units.
        physics: optional physics-aware terms, logged as physics_<term>; they never change the selection.
        designs [num_cases, D]: standardised design features, looked up by case index."""
        self.train = train
        self.node_weights = node_weights
        self.to_physical = to_physical
        self.augmenter = augmenter if augmenter is not None and augmenter.active else None
        self.physics = physics if physics is not None and physics.active else None
        self.designs = designs
        self.energy_per_element = energy_per_element

    def set_epochs(self, epochs: int) -> None:
        """The stage runs `epochs` epochs (the time budget cut them): the KL warm-up spans half of those."""
        self.train = dataclasses.replace(self.train, epochs=epochs)

    def __call__(self, model: torch.nn.Module, batch, epoch: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        fields = batch[0]
        beta = kl_weight(epoch, self.train)
        weights = None if self.node_weights is None else self.node_weights.to(fields.device)
        design = None if self.designs is None else self.designs.to(fields.device)[batch[1]]
        inputs, target = fields, fields
        if model.training and self.augmenter is not None:
            inputs, target = self.augmenter(fields)
        totals, samples, physics_values = [], [], {}
        # Validation: one decode at the posterior means (deterministic, and the relative errors reuse it).
        for _ in range(self.train.recon_iterations if model.training else 1):
            output = model(inputs, design=design, use_mean=not model.training)
            loss = vae_loss(output, target, beta, self.train, weights)
            sample_total = loss.total
            metrics = {"recon": loss.recon.item(), "kl": loss.kl.item()}
            if output.design_recon is not None:
                design_recon = reconstruction_loss(output.design_recon, target, self.train.loss_type, weights)
                extra, design_metrics = design_loss(self.train, output, design_recon, self.energy_per_element)
                sample_total = sample_total + extra
                metrics.update(design_metrics)
            if self.physics is not None:
                physics = self.physics(output.recon, target, weights, reference=loss.recon)
                sample_total = sample_total + self.train.recon_weight * physics.total
                for name, value in physics.terms.items():
                    physics_values.setdefault(name, []).append(value.detach())
            totals.append(sample_total)
            samples.append(metrics)
        total = torch.stack(totals).mean()
        metrics = {name: float(sum(m[name] for m in samples) / len(samples)) for name in samples[0]}
        metrics.update({"loss": total.item(), "beta": beta})
        for name, values in physics_values.items():
            metrics[f"physics_{name}"] = torch.stack(values).mean().item()
        # 'selection' picks the best epoch. Not the total loss: beta changes during warm-up, which makes the
        # totals of different epochs incomparable. The report's own metric where the physical units are known.
        if not model.training:
            if self.to_physical is None:
                metrics["selection"] = metrics["recon"]
            else:
                metrics.update(self.relative_errors(output, fields))
        return total, metrics

    def relative_errors(self, output: VAEOutput, fields: torch.Tensor) -> Dict[str, float]:
        """Mean over the batch of ||x - x_hat|| / ||x|| in physical units of the model's `output` at the
        posterior means ('reconstruction'; from the design prior alone, 'design'); 'selection' is their mean."""
        offset, factor = (t.to(fields.device)[None, :, None] for t in self.to_physical)
        truth = offset + factor * fields

        def relative(recon: torch.Tensor) -> float:
            physical = offset + factor * recon.float()
            return ((physical - truth).flatten(1).norm(dim=1) / truth.flatten(1).norm(dim=1).clamp_min(1e-30)
                    ).mean().item()

        errors = {"reconstruction": relative(output.recon)}
        if output.design_recon is not None:
            errors["design"] = relative(output.design_recon)
        errors["selection"] = sum(errors.values()) / len(errors)
        return errors


class ConditionerObjective:
    """Squared error between predicted and VAE latent codes (flat layout, main first), each latent number
    weighted by how much it moves the decoded field (`latent_weights`, mean 1; None = all equal)."""

    def __init__(self, latent_weights: Optional[torch.Tensor] = None, perturber: Optional[DesignAugmenter] = None):
        self.latent_weights = latent_weights
        self.perturber = perturber if perturber is not None and perturber.active else None

    def __call__(self, model: torch.nn.Module, batch, epoch: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        inputs, targets = batch[0], batch[1]
        if model.training and self.perturber is not None:
            inputs = self.perturber(inputs)
        squared = (model(inputs).flat().float() - targets) ** 2
        loss = squared.mean() if self.latent_weights is None else \
            (squared * self.latent_weights.to(squared.device)).mean()
        return loss, {"loss": loss.item()}


E2E_LOSSES = {
    "MSE": torch.nn.functional.mse_loss,
    "MAE": torch.nn.functional.l1_loss,
    "Huber": torch.nn.functional.huber_loss,
    "SmoothL1": torch.nn.functional.smooth_l1_loss,
}


# decode_flat() is given every level's latent, so these decoder heads (which compute priors and
# posteriors) are off the path from latent to field: left trainable they would get no gradient,
# and DistributedDataParallel stops on parameters that require a gradient and never receive one.
DECODER_HEADS_UNUSED_BY_DECODE_FLAT = ("prior_heads", "posterior_heads")


def reinitialise(modules) -> None:
    """Every layer of `modules` back to PyTorch's default initialisation (drawn from the global generator)."""
    for module in modules:
        for layer in module.modules():
            reset = getattr(layer, "reset_parameters", None)
            if callable(reset):
                reset()


class ConditionedDecoder(torch.nn.Module):
    """design -> conditioner -> VAE decoder -> mode coefficients [B, C, T]; the end-to-end model.

    It only ever turns requires_grad off: what the VAE freezes stays frozen under e2e_finetune_decoder 1,
    and the trainer's optimiser only receives parameters that require a gradient. The spatial basis is a
    buffer, so it is never trained; the encoder and the design prior are off the path and stay frozen."""

    def __init__(self, conditioner: torch.nn.Module, vae: torch.nn.Module, finetune_decoder: bool,
                 on_design_prior: bool = False, fresh_decoder: bool = False,
                 amplitude: Optional[AmplitudeScaling] = None):
        """on_design_prior: the conditioner's output is a correction added to the VAE's design_latent.
        amplitude: the decoder gives the unit field, multiplied here by the design's r (models/amplitude.py).
        fresh_decoder (with finetune_decoder): the decoder's layers on the latent -> field path start from a new
        initialisation instead of the VAE's weights (e2e_decoder_start fresh)."""
        super().__init__()
        self.conditioner = conditioner
        self.vae = vae
        self.on_design_prior = on_design_prior
        self.amplitude = amplitude
        on_path = {name: module for name, module in vae.decoder.named_children()
                   if name not in DECODER_HEADS_UNUSED_BY_DECODE_FLAT}
        if fresh_decoder:
            if not finetune_decoder:
                raise ValueError("a fresh prediction decoder must be trained: pass finetune_decoder=True")
            # The case PCA path (case_pca_path) keeps the VAE's linear readout (the training cases' PCA, frozen)
            # instead of a random map; zeroed, or left out, it predicted the demo no better (0.096 and 0.101
            # against 0.097, one conditioner each, when the readout was still trained; README, ablations).
            reinitialise(module for name, module in on_path.items() if name != "case_readout")
        trainable = {id(parameter) for module in on_path.values() for parameter in module.parameters()
                     if finetune_decoder}
        for parameter in vae.parameters():
            parameter.requires_grad_(parameter.requires_grad and id(parameter) in trainable)

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        flat = self.conditioner(inputs).flat()
        if self.on_design_prior:
            flat = flat + self.vae.design_latent(inputs)
        decoded = self.vae.decode_flat(flat, projected=True)
        if self.amplitude is not None:
            decoded = self.amplitude.from_unit(decoded, self.amplitude.ratios(inputs))
        return flat, decoded


class EndToEndObjective:
    """LC_alpha x field loss through the decoder (+ latent_reg_weight x latent MSE toward the VAE's code).

    The field loss is taken on the spatial-mode coefficients (in units of the basis scale): for MSE that is the
    physically weighted field error up to the constant the modes cannot hold, at a cost independent of the
    mesh. 'selection' is the latent-free field part, so the kept epoch is the one that predicts fields best."""

    def __init__(self, end_to_end: EndToEndConfig, augmenter: Optional[DesignAugmenter] = None):
        """augmenter: the design inputs' jitter (parameters) or noise and blur (images), in training only."""
        self.config = end_to_end
        self.field_loss = E2E_LOSSES[end_to_end.loss_function]
        self.augmenter = augmenter if augmenter is not None and augmenter.active else None

    def __call__(self, model: torch.nn.Module, batch, epoch: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        inputs, targets, coefficients = batch
        if model.training and self.augmenter is not None:
            inputs = self.augmenter(inputs)
        flat, recon = model(inputs)
        field = self.field_loss(recon.float(), coefficients)
        total = self.config.recon_weight * field
        latent = torch.nn.functional.mse_loss(flat.float(), targets)
        if self.config.use_latent_regularization:
            total = total + self.config.latent_reg_weight * latent
        metrics = {"loss": total.item(), "field": field.item(), "latent": latent.item()}
        if not model.training:
            metrics["selection"] = field.item()
        return total, metrics
