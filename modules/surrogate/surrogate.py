"""The trained surrogate: node scaler + VAE + latent conditioner, the one object inference goes through.

As EZyRB's `ReducedOrderModel(database, reduction, approximation)`: the node scaler normalises the fields,
the VAE is the reduction (fields <-> latent codes) and the conditioner the approximation (design -> latent
code). `predict`, `reconstruct` and the report's evaluation all call it, and none of them imports training
code. Fields are numpy [cases, timesteps, channels] float32 in physical units (channels: the nodes, or each
node's variables with num_var > 1; `user_layout` gives [..., nodes, variables]), run through the networks a
batch at a time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from modules.config.schema import DataConfig
from modules.data.scaling import NodeScaler
from modules.data.sweep_file import read_cases
from modules.data.variables import as_node_variables
from modules.errors import SimulGenError
from modules.models.ensemble import DecoderEnsemble, decoder_copy
from modules.models.vae import HierarchicalVAE
from modules.runtime import memory
from modules.runtime.devices import evaluation_mode
from modules.storage.state_files import load_weights
from modules.surrogate.band_calibration import band_std, std_floor
from modules.surrogate.field_readout import FieldReadout
from modules.surrogate.inverse_design import DesignPath, inverse_designs
from modules.surrogate.refinement import refined_reconstruction
from modules.surrogate.conditioner_bundle import TrainedConditioner, load_conditioner_bundle, predict_latents
from modules.surrogate.vae_bundle import VAEBundle, load_vae_bundle


@dataclass
class Prediction:
    fields: np.ndarray
    """[designs, T, N] float32, physical units (decoded from the predicted latent code)."""
    mean: Optional[np.ndarray] = None
    """[designs, T, N] mean of the decoder samples (with samples > 0)."""
    std: Optional[np.ndarray] = None
    """[designs, T, N] standard deviation of the decoder samples (with samples > 0)."""
    lower: Optional[np.ndarray] = None
    """[designs, T, N] fields - scale x std: the calibrated band (with samples > 0 and a calibrated conditioner)."""
    upper: Optional[np.ndarray] = None
    """[designs, T, N] fields + scale x std."""
    seconds: float = 0.0
    """Wall time of the prediction itself (inputs in memory -> fields), models already loaded."""


def decoder_text(name: str) -> str:
    """A decoder's name ('vae', 'conditioner k', 'design': Surrogate.reconstruction_decoder) in words."""
    if name == "design":
        return "the prediction path, by inverse design (the design whose prediction is nearest the field)"
    return "the VAE's decoder" if name == "vae" else f"{name}'s decoder"


@dataclass
class Surrogate:
    vae: HierarchicalVAE
    scaler: NodeScaler
    device: torch.device
    window: DataConfig
    """The data window the VAE was trained on (timesteps and nodes kept)."""
    coordinates: Optional[np.ndarray] = None
    """[nodes, 2 or 3] of the window, when the run knew them (for VTU output)."""
    triangles: Optional[np.ndarray] = None
    """[M, 3] mesh triangles of the window, when known (for VTU output)."""
    conditioner: Optional[TrainedConditioner] = None
    prediction_decoder: Optional[torch.nn.Module] = None
    """What decodes predicted codes when it is not the VAE: the conditioner's own decoder (a copy of the VAE
    holding it), an ensemble's members' decoders (DecoderEnsemble), and with a POD + GP blend that wrapped in
    its BlendedDecoder."""
    reconstruction_vae: Optional[HierarchicalVAE] = None
    """The copy of the VAE whose decoder reconstructs when validation picked a prediction decoder for it
    (TrainedConditioner.reconstruction_member); None: the VAE's own decoder."""
    _readout: Optional[FieldReadout] = field(default=None, init=False, repr=False, compare=False)
    """The folded readout of all channels, built on first use (it holds a copy of the modes)."""

    def user_layout(self, fields: np.ndarray) -> np.ndarray:
        """[..., channels] -> what users get: [..., nodes], or [..., nodes, variables] with num_var > 1."""
        return as_node_variables(fields, self.window.num_variables)

    @classmethod
    def from_bundle(cls, bundle: VAEBundle, device: torch.device) -> "Surrogate":
        return cls(bundle.model, bundle.scaler, device, bundle.config.data, bundle.coordinates, bundle.triangles)

    @classmethod
    def load(cls, vae_path: Path, device: torch.device, conditioner_path: Optional[Path] = None) -> "Surrogate":
        """The saved VAE bundle, and the conditioner bundle when a path is given (with the decoder
        weights end-to-end training fine-tuned, when it did)."""
        surrogate = cls.from_bundle(load_vae_bundle(vae_path, device), device)
        if conditioner_path is None:
            return surrogate
        return surrogate.with_conditioner(load_conditioner_bundle(conditioner_path, device), conditioner_path)

    def with_conditioner(self, conditioner: TrainedConditioner, source: Optional[Path] = None) -> "Surrogate":
        """The conditioner's decoders go into copies of the VAE (sharing its frozen basis); the VAE keeps its
        own decoder. source: the bundle's path when loaded from disk (named in errors), None after training."""
        copies = []
        if conditioner.decoder_weights is not None:
            for weights in [conditioner.decoder_weights] + conditioner.member_decoder_weights:
                member = decoder_copy(self.vae)
                load_weights(member.decoder, weights, source or Path("latent_conditioner.pt"))
                copies.append(member)
        decoder: Optional[torch.nn.Module] = None
        if copies:
            decoder = copies[0] if len(copies) == 1 else DecoderEnsemble(copies).to(self.device)
        if conditioner.blend is not None or conditioner.amplitude is not None:
            decoder = conditioner.prediction_decoder(self.vae if decoder is None else decoder)
        member = conditioner.reconstruction_member
        return replace(self, conditioner=conditioner, prediction_decoder=decoder,
                       reconstruction_vae=None if member is None else copies[member])

    @property
    def reconstruction_decoder(self) -> str:
        """What reconstructs: 'vae' (its own decoder), 'conditioner k' (k-th trained member's prediction decoder),
        or 'design' (inverse design through the prediction path, surrogate/inverse_design.py)."""
        if self.reconstructs_by_design:
            return "design"
        if self.reconstruction_vae is None:
            return "vae"
        return f"conditioner {self.conditioner.members_kept[self.conditioner.reconstruction_member] + 1}"

    def without_blend(self) -> "Surrogate":
        """The same surrogate predicting with the conditioners alone (no POD + GP blend)."""
        if self.conditioner is None or self.conditioner.blend is None:
            return self
        amplitude = self.conditioner.amplitude
        blended = self.prediction_decoder if amplitude is None else self.prediction_decoder.unit_decoder
        decoder = blended.network_decoder
        if amplitude is not None:
            decoder = amplitude.decoder(decoder)
        return replace(self, conditioner=replace(self.conditioner, blend=None),
                       prediction_decoder=None if decoder is self.vae else decoder)

    @property
    def reconstruction_decoder_text(self) -> str:
        """'the VAE's decoder' or 'conditioner k's decoder', for logs and messages."""
        return decoder_text(self.reconstruction_decoder)

    def _predicting(self):
        """What decodes predicted codes: the conditioner's decoders, or the VAE."""
        return self.vae if self.prediction_decoder is None else self.prediction_decoder

    def _reconstructing(self) -> HierarchicalVAE:
        return self.vae if self.reconstruction_vae is None else self.reconstruction_vae

    @property
    def reconstructs_by_design(self) -> bool:
        return self.conditioner is not None and self.conditioner.reconstructs_by_design

    def design_path(self) -> DesignPath:
        """Standardised parameter designs -> the prediction's mode coefficients (what predict decodes)."""
        conditioner = self._trained_conditioner()
        return DesignPath(conditioner.predictor, self._predicting(), conditioner.on_design_prior)

    def inverse_designs(self, fields: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """[k, T, N] fields (physical units) -> [k, p] float64: the parameter designs, in the table's units and
        column order, whose prediction matches each field best (surrogate/inverse_design.py)."""
        return self.reconstruct_with_designs(fields, batch_size, reconstruct=False)[1]

    def reconstruct_with_designs(self, fields: np.ndarray, batch_size: int = 32,
                                 reconstruct: bool = True) -> Tuple[Optional[np.ndarray], np.ndarray]:
        """(reconstruct(fields), inverse_designs(fields)) in one pass: where reconstruction goes by inverse design,
        the designs it found are the ones returned, not searched for twice. reconstruct=False: (None, designs)."""
        scaler = self._trained_conditioner().input_scaler
        out = np.empty(fields.shape, dtype=np.float32) if reconstruct else None
        found = []
        for chunk in memory.chunk_slices(len(fields), batch_size):
            coefficients = self._projected(fields[chunk])
            designs, prediction = self._inverse_designs_in_basis(coefficients)
            if reconstruct:
                decoded = prediction if self.reconstructs_by_design else self._reconstruct_in_basis(coefficients)
                self.field_readout().write(decoded, out[chunk])
            found.append(designs.double().cpu().numpy())
        return out, (scaler.inverse(np.concatenate(found)) if found else np.empty((0, 0)))

    def _inverse_designs_in_basis(self, coefficients: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mode coefficients [k, C, T] -> (the standardised inverse designs [k, p], their predictions [k, C, T])."""
        conditioner = self._trained_conditioner()
        if conditioner.training_designs is None:
            raise SimulGenError("inverse design needs a conditioner trained on a parameter table and saved with its "
                                "training designs; this run's reads design images or was saved before inverse design "
                                "existed: train the conditioner again (python SimulGen-VAE.py --lc_only=1)")
        path = self.design_path()
        with evaluation_mode(path):
            designs = inverse_designs(path, coefficients, conditioner.training_designs.to(coefficients.device),
                                      self.vae.cfg.refine_steps)
            with torch.no_grad():
                return designs, path(designs)

    def _reconstruct_in_basis(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Mode coefficients [k, C, T] (basis units, on the device) -> their reconstruction, the same shape."""
        if self.reconstructs_by_design:
            return self._inverse_designs_in_basis(coefficients)[1]
        vae = self._reconstructing()
        with evaluation_mode(vae):
            return refined_reconstruction(vae, coefficients, vae.cfg.refine_steps, self._reconstruction_starts())

    def _reconstruction_starts(self) -> Optional[torch.Tensor]:
        """The picked prediction decoder's codes of the training designs, its refinement's second starts."""
        return None if self.reconstruction_vae is None else self.conditioner.reconstruction_starts

    # ------------------------------------------------------------------ reduction: fields <-> latent codes
    def encode_cases(self, array: np.ndarray, batch_size: int = 32) -> Dict[str, np.ndarray]:
        """Posterior means (and log-variances) of every case of a sweep array, the conditioner's targets:
        {"main" [cases, Lm], "hier" [cases, K, Lh], "flat", "flat_logvar" [cases, Lm + K*Lh]}. The encoder's own
        output, not refined: the conditioner learns the code the encoder gives the design, which the VAE's
        design prior kept smooth across designs."""
        case_bytes = self.window.timesteps * self.window.channels * 4
        batch_size = min(batch_size, memory.items_per_chunk(case_bytes, memory.FIELD_BATCH_BYTES))
        chunks = memory.chunks(np.arange(self.window.num_cases), batch_size)
        return self._codes(torch.as_tensor(self.scaler.transform(read_cases(array, chunk, self.window)))
                           .transpose(1, 2) for chunk in chunks)

    def encode_coefficients(self, coefficients: torch.Tensor, batch_size: int = 256) -> Dict[str, np.ndarray]:
        """encode_cases from the cases' spatial-mode coefficients [cases, C, T] (the training's one projection
        pass, in the basis' units): the same codes without reading the sweep again."""
        return self._codes((coefficients[chunk] for chunk in memory.chunk_slices(len(coefficients), batch_size)),
                           projected=True)

    def _codes(self, batches, projected: bool = False) -> Dict[str, np.ndarray]:
        mains, hiers, flats, logvars = [], [], [], []
        with evaluation_mode(self.vae):
            for batch in batches:
                code = self.vae.encode(batch.to(self.device), projected=projected)
                mains.append(code.main_mu.float().cpu().numpy())
                hiers.append(torch.stack(code.hier_mu, dim=1).float().cpu().numpy() if code.hier_mu
                             else np.zeros((len(batch), 0, self.vae.layout.hier), dtype=np.float32))
                flats.append(code.flat().float().cpu().numpy())
                logvars.append(code.flat_logvar().float().cpu().numpy())
        return {"main": np.concatenate(mains), "hier": np.concatenate(hiers), "flat": np.concatenate(flats),
                "flat_logvar": np.concatenate(logvars)}

    def reconstruct(self, fields: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """decode(encode(x)): [k, T, N] in and out, physical units. The encoder's code is refined on the
        field's own error (at most refine_steps L-BFGS iterations, surrogate/refinement.py) through the
        reconstruction decoder (the VAE's, or the prediction decoder validation picked, which also refines from
        the nearest of its training codes and keeps the better) before it is decoded."""
        out = np.empty(fields.shape, dtype=np.float32)
        for chunk in memory.chunk_slices(len(fields), batch_size):
            self.field_readout().write(self._reconstruct_in_basis(self._projected(fields[chunk])), out[chunk])
        return out

    def _projected(self, fields: np.ndarray) -> torch.Tensor:
        """Fields [k, T, N] (physical units) -> their spatial-mode coefficients [k, C, T] on the device."""
        scaled = torch.as_tensor(self.scaler.transform(np.asarray(fields, dtype=np.float32)))
        return self.vae.basis.project(scaled.transpose(1, 2).to(self.device))

    def reconstruct_coefficients(self, coefficients: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """reconstruct in the spatial-mode coefficients [k, C, T] (basis units): what the decoder gives for the
        refined code, before the basis turns it into fields."""
        out = torch.empty(coefficients.shape, dtype=torch.float32)
        for chunk in memory.chunk_slices(len(coefficients), batch_size):
            out[chunk] = self._reconstruct_in_basis(coefficients[chunk].to(self.device)).float().cpu()
        return out

    def field_readout(self, channels: Optional[np.ndarray] = None) -> FieldReadout:
        """Coefficients -> physical fields (field_readout.py): cached for all channels, built for a subset."""
        if channels is not None:
            return FieldReadout(self.vae.basis, self.scaler, self.device, channels)
        if self._readout is None:
            self._readout = FieldReadout(self.vae.basis, self.scaler, self.device)
        return self._readout

    def decode_coefficients(self, flat: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Flat latent codes [k, Lm + K*Lh] -> spatial-mode coefficients [k, C, T] (basis units), before the
        basis reads them out: what a prediction's error can be measured on without its field."""
        out = torch.empty((len(flat), self.vae.num_modes, self.vae.num_timesteps), dtype=torch.float32)
        decoder = self._predicting()
        with evaluation_mode(decoder):
            for chunk in memory.chunk_slices(len(flat), batch_size):
                out[chunk] = decoder.decode_flat(flat[chunk].to(self.device), projected=True).float().cpu()
        return out

    def decode(self, flat: torch.Tensor, batch_size: int = 64, channels: Optional[np.ndarray] = None) -> np.ndarray:
        """Flat latent codes [k, Lm + K*Lh] -> fields [k, T, N] float32 in physical units; with `channels`
        (indices into the window's channels) only those [k, T, n], at their cost: the basis readout is nearly
        all of decoding a large mesh."""
        return self._decode_with(self.field_readout(channels), flat, batch_size)

    def _decode_with(self, readout: FieldReadout, flat: torch.Tensor, batch_size: int) -> np.ndarray:
        out = np.empty((len(flat), self.vae.num_timesteps, readout.channels), np.float32)
        decoder = self._predicting()
        with evaluation_mode(decoder):
            for chunk in memory.chunk_slices(len(flat), batch_size):
                readout.write(decoder.decode_flat(flat[chunk].to(self.device), projected=True), out[chunk])
        return out

    # ------------------------------------------------------------------ approximation: design -> latent code
    def predict_latents(self, designs: np.ndarray, batch_size: int = 256) -> torch.Tensor:
        """Raw designs (parameters [k, p] or images [k, C, S, S]) -> predicted flat latent codes [k, ...]."""
        conditioner = self._trained_conditioner()
        prior = self._predicting() if conditioner.on_design_prior else None
        with evaluation_mode(self._predicting()):
            return predict_latents(conditioner.predictor, conditioner.model_inputs(designs), self.device, batch_size,
                                   prior)

    def predict(self, designs: np.ndarray, batch_size: int = 64, samples: int = 0, seed: int = 0,
                channels: Optional[np.ndarray] = None) -> Prediction:
        """Fields of the designs; with samples > 0 also the mean and standard deviation of that many decodes
        of latent codes drawn around the prediction with the conditioner's validation error per latent number,
        so the spread shows how far the prediction can be from the code a simulation would have. With a
        calibrated conditioner also the band fields +- scale x w x std that covers the nominal share (90 %) of
        held-out values (band_calibration.py), w the design's band width (`band_widths`). With `channels`, every
        field holds only those channels (the same draws, so the same values there)."""
        started = time.perf_counter()
        flat = self.predict_latents(designs, batch_size)
        readout = self.field_readout(channels)  # built once for the prediction and all its draws
        result = Prediction(fields=self._decode_with(readout, flat, batch_size))
        if samples > 0:
            generator = torch.Generator().manual_seed(seed)
            total = np.zeros(result.fields.shape, dtype=np.float64)
            total_sq = np.zeros(result.fields.shape, dtype=np.float64)
            residual = self._trained_conditioner().latent_residual_std.float()
            for _ in range(samples):
                drawn = self._decode_with(readout, flat + torch.randn(flat.shape, generator=generator) * residual,
                                          batch_size)
                total += drawn
                total_sq += drawn.astype(np.float64) ** 2
            mean = total / samples
            result.mean = mean.astype(np.float32)
            result.std = np.sqrt(np.maximum(total_sq / samples - mean ** 2, 0.0)).astype(np.float32)
            band = self._trained_conditioner().band
            if band is not None:
                widened = band_std(result.std, self.band_widths(designs))
                half_width = band.scale * np.maximum(widened, std_floor(widened))
                result.lower = (result.fields - half_width).astype(np.float32)
                result.upper = (result.fields + half_width).astype(np.float32)
        result.seconds = time.perf_counter() - started
        return result

    def band_widths(self, designs: np.ndarray) -> np.ndarray:
        """[k] how wide each design's band is against a typical validation design's, per unit of sampled std (all
        1 without a design spread: image designs, bundles written before it existed)."""
        conditioner = self._trained_conditioner()
        if conditioner.band_spread is None:
            return np.ones(len(designs))
        with torch.no_grad():
            return conditioner.band_spread(conditioner.model_inputs(designs)).double().cpu().numpy()

    def _trained_conditioner(self) -> TrainedConditioner:
        if self.conditioner is None:
            raise ValueError("this surrogate has no latent conditioner: load it with conditioner_path, or "
                             "train one (python SimulGen-VAE.py --lc_only=1)")
        return self.conditioner
