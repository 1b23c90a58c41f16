"""The trained latent conditioner as users keep it (`latent_conditioner.pt`), and running it.

The bundle holds the network's weights and settings, the input scaler, the image PCA when there is one,
the per-latent validation error that `predict --samples` draws with, and the decoder weights when
end-to-end training fine-tuned them (one decoder per member of an ensemble). State dicts and plain values only, loaded with weights_only=True.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from modules.config.schema import ConditionerConfig, RunConfig
from modules.data.input_scaler import InputScaler
from modules.data.designs import scaled_inputs
from modules.data.image_pca import ImagePCA
from modules.errors import CheckpointError
from modules.models.conditioners import build_conditioner
from modules.models.amplitude import AmplitudeScaling
from modules.models.design_spread import DesignSpread
from modules.models.ensemble import ConditionerEnsemble
from modules.models.pod_gp_blend import PodGpBlend
from modules.models.vae import HierarchicalVAE
from modules.runtime import memory
from modules.runtime.devices import evaluation_mode
from modules.storage.state_files import load_state, load_weights, save_state
from modules.surrogate.band_calibration import BandCalibration

CONDITIONER_BUNDLE_FORMAT = "simulgenvae-conditioner-1"


@dataclass
class TrainedConditioner:
    """A conditioner with everything prediction needs."""

    model: torch.nn.Module
    input_scaler: InputScaler
    input_kind: str
    in_channels: int
    latent_residual_std: torch.Tensor
    """[flat latent] std of (predicted - VAE latent) on validation designs: the sampling width of --samples."""
    decoder_weights: Optional[Dict[str, torch.Tensor]]
    """The VAE decoder's weights (decoder state dict) after end-to-end training of the decoder, else None (the
    VAE bundle's decoder predicts)."""
    config: ConditionerConfig
    """The conditioner settings it was trained with (image_size, num_params)."""
    image_pca: Optional[ImagePCA] = None
    """With image_pca_components > 0: the PCA of the standardised training images whose scores the MLP reads."""
    band: Optional[BandCalibration] = None
    """The split-conformal width of the --samples band (band_calibration.py); None before it was calibrated."""
    on_design_prior: bool = False
    """The conditioner predicts a correction to the VAE's own design-prior code (design_latent) of the same
    standardised parameters, not the code itself (see training/conditioner_stage.py)."""
    member_decoder_weights: List[Dict[str, torch.Tensor]] = dataclasses.field(default_factory=list)
    """With conditioner_ensemble > 1: the prediction decoders (decoder state dicts) of members 2, 3, ...; the
    first member's is decoder_weights. `model` is then a ConditionerEnsemble (models/ensemble.py)."""

    members_trained: int = 1
    """Members trained; the ensemble keeps those whose mean predicted the validation designs best."""
    members_kept: List[int] = dataclasses.field(default_factory=lambda: [0])
    """Which trained members (0-based, in training order) the model holds."""
    blend: Optional[PodGpBlend] = None
    """With pod_gp_blend auto, when validation chose one: the POD + Gaussian processes mixed into the prediction
    (models/pod_gp_blend.py). `model` is the conditioners alone; `predictor` adds the processes' scores."""
    reconstruction_member: Optional[int] = None
    """Which saved prediction decoder (0: decoder_weights, k: member_decoder_weights[k - 1]) reconstructs, when
    it reconstructed the validation cases better than the VAE's own decoder (training/reconstruction_choice.py);
    None: the VAE's decoder."""
    reconstruction_starts: Optional[torch.Tensor] = None
    """[training cases, flat latent] with reconstruction_member: that decoder's codes of the training designs,
    the second starts of its refinement (surrogate/refinement.py)."""
    band_spread: Optional[DesignSpread] = None
    """Parameter designs: how much wider the band is for a design than for a typical validation design
    (a Gaussian process's posterior std, models/design_spread.py). None (images, bundles written before it
    existed): the same band width for every design."""
    amplitude: Optional[AmplitudeScaling] = None
    """With an amplitude parameter (amplitude_parameter): the decoders and the blend predict unit fields, the
    prediction is r x them (models/amplitude.py); the predicted code ends with r. None: fields as they are."""
    training_designs: Optional[torch.Tensor] = None
    """[training cases, p] the standardised training designs of a parameter-table conditioner: the starts of
    inverse design (surrogate/inverse_design.py; `reconstruct --designs`). None: image designs, or bundles written
    before it existed."""
    reconstructs_by_design: bool = False
    """Reconstruction goes by inverse design through the prediction path (it reconstructed the validation cases
    best, training/reconstruction_choice.py), not through a decoder (reconstruction_member)."""
    parameter_names: Optional[List[str]] = None
    """The parameter table's column names from its header row (`reconstruct --designs` writes them). None: no
    header, image designs, or bundles written before it existed (parameter_1..p then)."""

    @property
    def predictor(self) -> torch.nn.Module:
        """Design inputs -> the predicted code: the network's, with the blend's scores and r side by side."""
        predictor = self.model if self.blend is None else self.blend.conditioner(self.model)
        return predictor if self.amplitude is None else self.amplitude.conditioner(predictor)

    def prediction_decoder(self, network_decoder: torch.nn.Module) -> torch.nn.Module:
        """What decodes `predictor`'s code: the network decoder(s), inside the blend's and the amplitude's."""
        decoder = network_decoder if self.blend is None else self.blend.decoder(network_decoder)
        return decoder if self.amplitude is None else self.amplitude.decoder(decoder)

    @property
    def members(self) -> int:
        return 1 + len(self.member_decoder_weights)

    def model_inputs(self, designs: np.ndarray) -> torch.Tensor:
        """Raw designs -> what the network reads (see `model_inputs`)."""
        return model_inputs(designs, self.input_scaler, self.image_pca)


def model_inputs(designs: np.ndarray, input_scaler: InputScaler, image_pca: Optional[ImagePCA]) -> torch.Tensor:
    """Standardised parameters [cases, p] or images [cases, C, S, S]; with image_pca, the whitened PCA scores
    [cases, N] of the standardised images. Training, evaluation and `predict` all go through here."""
    inputs = scaled_inputs(designs, input_scaler)
    return inputs if image_pca is None else image_pca.transform(inputs)


def predict_latents(conditioner: torch.nn.Module, inputs: torch.Tensor, device: torch.device,
                    batch_size: int = 256, prior: Optional[torch.nn.Module] = None) -> torch.Tensor:
    """Flat latent codes [k, F]; with `prior` (an on_design_prior conditioner) its design_latent is added
    (an ensemble's: a DecoderEnsemble, one design-prior code per member)."""
    outputs = []
    with evaluation_mode(conditioner):
        for batch in memory.chunks(inputs, batch_size):
            flat = conditioner(batch.to(device)).flat().float()
            if prior is not None:
                flat = flat + prior.design_latent(batch.to(device)).float()
            outputs.append(flat.cpu())
    return torch.cat(outputs)


def save_conditioner_bundle(path: Path, trained: TrainedConditioner, config: RunConfig, vae: HierarchicalVAE) -> Path:
    state: Dict[str, Any] = {
        "format": CONDITIONER_BUNDLE_FORMAT,
        "model": {k: v.detach().cpu() for k, v in trained.model.state_dict().items()},
        "conditioner_config": dataclasses.asdict(config.conditioner),
        "spectral_norm": config.model.spectral_norm,
        "latent_dims": [vae.layout.main, vae.layout.hier, vae.layout.levels],
        "input_kind": trained.input_kind,
        "in_channels": trained.in_channels,
        "input_scaler": trained.input_scaler.state_dict(),
        "latent_residual_std": trained.latent_residual_std,
        "seed": config.train.seed,
    }
    if trained.decoder_weights is not None:
        state["decoder_weights"] = trained.decoder_weights
    if trained.image_pca is not None:
        state["image_pca"] = trained.image_pca.state_dict()
    if trained.band is not None:
        state["band"] = dataclasses.asdict(trained.band)
    state["on_design_prior"] = trained.on_design_prior
    if trained.members_trained > 1:
        state["ensemble_trained"] = trained.members_trained
        state["ensemble_kept"] = list(trained.members_kept)
    if trained.blend is not None:
        state["pod_gp_blend"] = trained.blend.state_dict()
    if trained.member_decoder_weights:
        state["ensemble_members"] = trained.members
        state["member_decoder_weights"] = trained.member_decoder_weights
    if trained.reconstruction_member is not None:
        state["reconstruction_decoder"] = trained.reconstruction_member
    if trained.training_designs is not None:
        state["training_designs"] = trained.training_designs.detach().cpu()
    if trained.reconstructs_by_design:
        state["reconstruction_by_design"] = True
    if trained.parameter_names is not None:
        state["parameter_names"] = list(trained.parameter_names)
    if trained.reconstruction_starts is not None:
        state["reconstruction_starts"] = trained.reconstruction_starts.detach().cpu()
    if trained.band_spread is not None:
        state["band_spread"] = {k: v.cpu() for k, v in trained.band_spread.state_dict().items()}
    if trained.amplitude is not None:
        state["amplitude"] = trained.amplitude.state_dict()
    return save_state(path, state)


def load_conditioner_bundle(path: Path, device: torch.device) -> TrainedConditioner:
    state = load_state(path)
    if state.get("format") != CONDITIONER_BUNDLE_FORMAT:
        raise CheckpointError(f"{path}: not a SimulGenVAE latent conditioner (format {state.get('format')!r})")
    stored = dict(state["conditioner_config"])
    # Bundles written before image_coordinates, image_features and image_gray_levels existed hold the CNN of
    # that time.
    stored.setdefault("image_coordinates", False)
    stored.setdefault("image_features", "pooled")
    stored.setdefault("image_gray_levels", 0)
    stored.setdefault("amplitude_parameter", "none")
    cfg = ConditionerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})
    latent_dim_main, latent_dim_hier, levels = state["latent_dims"]
    members = int(state.get("ensemble_members", 1))
    networks = [build_conditioner(cfg, latent_dim_main, latent_dim_hier, levels, in_channels=state["in_channels"],
                                  spectral_norm=state["spectral_norm"]) for _ in range(members)]
    model = networks[0] if members == 1 else ConditionerEnsemble(networks)
    load_weights(model, state["model"], path)
    member_decoders = list(state.get("member_decoder_weights", []))
    if len(member_decoders) != members - 1:
        raise CheckpointError(f"{path}: an ensemble of {members} conditioners needs {members - 1} more prediction "
                              f"decoders, the file holds {len(member_decoders)}; it is damaged, retrain the conditioner")
    model.to(device).eval()
    # Bundles written before image PCA existed have neither the key nor the setting: they load as before.
    image_pca = ImagePCA.from_state_dict(state["image_pca"]) if "image_pca" in state else None
    found = 0 if image_pca is None else image_pca.num_components
    if found != cfg.image_pca_components:
        raise CheckpointError(f"{path}: the conditioner was trained with image_pca_components "
                              f"{cfg.image_pca_components} but the bundle holds {found} PCA components; "
                              f"the file is damaged or was edited, retrain the conditioner")
    return TrainedConditioner(model, InputScaler.from_state_dict(state["input_scaler"]), state["input_kind"],
                              state["in_channels"], state["latent_residual_std"], _decoder_weights(state), cfg,
                              image_pca, BandCalibration(**state["band"]) if state.get("band") else None,
                              bool(state.get("on_design_prior", False)), member_decoders,
                              int(state.get("ensemble_trained", members)),
                              list(state.get("ensemble_kept", range(members))), _blend(state, path, device),
                              _reconstruction_member(state, members, path),
                              _reconstruction_starts(state, latent_dim_main + levels * latent_dim_hier, path),
                              _band_spread(state, path, device), _amplitude(state, cfg, path),
                              *_inverse_design(state, cfg, path), _parameter_names(state, cfg, path))


def _amplitude(state: Dict[str, Any], cfg: ConditionerConfig, path: Path) -> Optional[AmplitudeScaling]:
    """Bundles written before amplitude scaling existed predict the fields as they are."""
    if "amplitude" not in state:
        return None
    amplitude = _part(state, "amplitude", AmplitudeScaling.from_state_dict, "the amplitude scaling", path)
    if not 0 <= amplitude.column < cfg.num_params:
        raise CheckpointError(f"{path}: the amplitude scaling reads parameter {amplitude.column + 1} of "
                              f"{cfg.num_params}; the file is damaged or was edited, retrain the conditioner "
                              "(python SimulGen-VAE.py --lc_only=1)")
    return amplitude


def _reconstruction_member(state: Dict[str, Any], members: int, path: Path) -> Optional[int]:
    """Bundles written before the reconstruction decoder was picked have no key: the VAE's decoder reconstructs."""
    member = state.get("reconstruction_decoder")
    if member is None:
        return None
    if not isinstance(member, int) or not 0 <= member < members or _decoder_weights(state) is None:
        raise CheckpointError(f"{path}: reconstruction_decoder {member!r} names no saved prediction decoder (the "
                              f"bundle holds {members if _decoder_weights(state) is not None else 0}); it is damaged "
                              "or was edited, retrain the conditioner (python SimulGen-VAE.py --lc_only=1)")
    return member


def _reconstruction_starts(state: Dict[str, Any], flat_latent: int, path: Path) -> Optional[torch.Tensor]:
    """Bundles written before the second starts existed refine from the encoder's code alone."""
    starts = state.get("reconstruction_starts")
    if starts is None:
        return None
    if (state.get("reconstruction_decoder") is None or not isinstance(starts, torch.Tensor) or starts.dim() != 2
            or starts.shape[1] != flat_latent or not bool(torch.isfinite(starts).all())):
        shape = tuple(starts.shape) if isinstance(starts, torch.Tensor) else type(starts).__name__
        raise CheckpointError(f"{path}: reconstruction_starts {shape} are not finite codes [cases, {flat_latent}] of "
                              "the reconstruction decoder; the file is damaged or was edited, retrain the conditioner "
                              "(python SimulGen-VAE.py --lc_only=1)")
    return starts.float()


def _inverse_design(state: Dict[str, Any], cfg: ConditionerConfig, path: Path) -> Tuple[Optional[torch.Tensor], bool]:
    """(training_designs, reconstructs_by_design); bundles written before inverse design existed have neither."""
    designs, by_design = state.get("training_designs"), state.get("reconstruction_by_design", False)
    num_params = cfg.num_params
    if designs is not None and (cfg.input_type != "csv" or not isinstance(designs, torch.Tensor) or designs.dim() != 2
                                or designs.shape[1] != num_params or len(designs) == 0
                                or not bool(torch.isfinite(designs).all())):
        shape = tuple(designs.shape) if isinstance(designs, torch.Tensor) else type(designs).__name__
        raise CheckpointError(f"{path}: training_designs {shape} are not finite standardised parameter designs "
                              f"[cases, {num_params}] of a parameter-table conditioner; the file is damaged or was "
                              "edited, retrain the conditioner (python SimulGen-VAE.py --lc_only=1)")
    if by_design is not False and (by_design is not True or designs is None
                                   or state.get("reconstruction_decoder") is not None):
        raise CheckpointError(f"{path}: reconstruction_by_design {by_design!r} needs training_designs and no "
                              "reconstruction_decoder; the file is damaged or was edited, retrain the conditioner "
                              "(python SimulGen-VAE.py --lc_only=1)")
    return (None if designs is None else designs.float()), by_design


def _parameter_names(state: Dict[str, Any], cfg: ConditionerConfig, path: Path) -> Optional[List[str]]:
    """Bundles written before the names were kept, and tables without a header, have none."""
    names = state.get("parameter_names")
    if names is None:
        return None
    if (cfg.input_type != "csv" or not isinstance(names, list) or len(names) != cfg.num_params
            or not all(isinstance(name, str) and name for name in names)):
        raise CheckpointError(f"{path}: parameter_names {names!r} are not the {cfg.num_params} column names of a "
                              "parameter table; the file is damaged or was edited, retrain the conditioner "
                              "(python SimulGen-VAE.py --lc_only=1)")
    return names


def _band_spread(state: Dict[str, Any], path: Path, device: torch.device) -> Optional[DesignSpread]:
    if "band_spread" not in state:  # images, and bundles written before the band widened with the design
        return None
    try:
        spread = DesignSpread.from_state_dict(state["band_spread"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: band_spread (the --samples band's design spread) is damaged ({error}); "
                              "retrain the conditioner (python SimulGen-VAE.py --lc_only=1)") from error
    return spread.to(device)


def _decoder_weights(state: Dict[str, Any]) -> Optional[Dict[str, torch.Tensor]]:
    """The prediction decoder's state dict; bundles written before 2026-11-30 held the whole VAE's state under
    "vae_weights", of which only the decoder's part differs from the VAE bundle."""
    if "decoder_weights" in state:
        return state["decoder_weights"]
    if "vae_weights" in state:
        return {name[len("decoder."):]: value for name, value in state["vae_weights"].items()
                if name.startswith("decoder.")}
    return None


def _blend(state: Dict[str, Any], path: Path, device: torch.device) -> Optional[PodGpBlend]:
    if "pod_gp_blend" not in state:  # bundles written before the blend existed predict as they did
        return None
    blend = _part(state, "pod_gp_blend", PodGpBlend.from_state_dict, "the POD + GP blend", path)
    blend.gp.to(device)
    return blend


def _part(state: Dict[str, Any], key: str, from_state_dict: Callable[[Dict[str, Any]], Any], what: str,
          path: Path) -> Any:
    """state[key] rebuilt, or a CheckpointError naming what is damaged and the fix."""
    try:
        return from_state_dict(state[key])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: {what} in the bundle is damaged ({error}); retrain the conditioner "
                              "(python SimulGen-VAE.py --lc_only=1)") from error
