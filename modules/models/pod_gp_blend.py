"""Prediction as a blend: w x (the conditioners' decoded field) + (1 - w) x (POD + Gaussian processes' field).

POD + GP (one Gaussian process per case-PCA score of the training cases) is the classic surrogate the report
measures the tool against; the conditioners' errors and its errors are far from identical, so a mean of the
two beats both where neither dominates. Measured offline on the saved benchmark runs (test designs, pooled;
the weight picked on the validation designs): demo 0.089 against 0.097 (tool) and 0.094 (POD + GP), wave sweep
0.281 against 0.298 and 0.325, advection sweep 0.487 with w = 1 (the tool alone; POD + GP 0.694).

The blend keeps the ensemble's convention (models/ensemble.py): the predicted code is the conditioners' code
with the Gaussian processes' predicted scores side by side, and decoding mixes the two parts' mode
coefficients. So `predict`, the band's draws and the report all go through the same two calls. The Gaussian
processes are fitted with scikit-learn at training time and evaluated here in torch from their fitted
tensors: the bundle holds tensors only (no pickled estimators) and predicting needs no scikit-learn objects.

Design images read as pixels have no design vector for the Gaussian processes; there they read the conditioners'
own predicted code (the members' mean), a summary of the drawing the networks learned (`reads_code`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from modules.models.case_pca import CasePCA
from modules.models.decoder import at_timesteps
from modules.models.design_gp import DesignGaussianProcess
from modules.models.ensemble import MembersCode

def members_mean(code: torch.Tensor, width: int) -> torch.Tensor:
    """The members' codes side by side [B, members x width] -> their mean [B, width]."""
    return code.reshape(len(code), -1, width).mean(dim=1)


@dataclass
class PodGpBlend:
    """The fitted blend: the Gaussian processes predict the whitened scores of `pca` (the training cases' case
    PCA of the mode coefficients), read out as coefficients [C, T] and mixed with weight 1 - `weight`."""

    weight: float
    """On the conditioners' field; 1 - weight on POD + GP's."""
    gp: DesignGaussianProcess
    pca: CasePCA
    coefficient_shape: Tuple[int, int]
    """(C, T): spatial modes x timesteps of the decoders' coefficients."""
    reads_code: int = 0
    """0: the Gaussian processes read the design inputs. F > 0: they read the conditioners' predicted code, F
    numbers per member, averaged over the members (design images, which have no design vector)."""

    @property
    def scores(self) -> int:
        return self.gp.processes

    def coefficients(self, scores: torch.Tensor) -> torch.Tensor:
        """Whitened scores [B, m] -> mode coefficients [B, C, T] (float32)."""
        pca = self.pca
        flat = pca.mean.to(scores.device) + (scores.double() * pca.spread.to(scores.device)) @ \
            pca.directions.to(scores.device)
        return flat.reshape((-1,) + tuple(self.coefficient_shape)).float()

    def gp_inputs(self, inputs: torch.Tensor, network_code: torch.Tensor) -> torch.Tensor:
        """What the Gaussian processes read for these design inputs, given the conditioners' code [B, members x F]
        of them."""
        return inputs if not self.reads_code else members_mean(network_code, self.reads_code)

    def scores_of(self, inputs: torch.Tensor, network_code: torch.Tensor) -> torch.Tensor:
        """The Gaussian processes' predicted whitened scores [B, m] (float32, on the code's device)."""
        return self.gp(self.gp_inputs(inputs, network_code)).to(network_code.device).float()

    def mix(self, network: torch.Tensor, pod_gp: torch.Tensor) -> torch.Tensor:
        return self.weight * network + (1.0 - self.weight) * pod_gp

    def conditioner(self, network: torch.nn.Module) -> "BlendedConditioner":
        return BlendedConditioner(network, self)

    def decoder(self, network_decoder: torch.nn.Module) -> "BlendedDecoder":
        return BlendedDecoder(network_decoder, self)

    def state_dict(self) -> Dict[str, object]:
        return {"weight": self.weight, "gp": {k: v.cpu() for k, v in self.gp.state_dict().items()},
                "pca_mean": self.pca.mean, "pca_directions": self.pca.directions, "pca_spread": self.pca.spread,
                "coefficient_shape": list(self.coefficient_shape), "reads_code": self.reads_code}

    @classmethod
    def from_state_dict(cls, state: Dict[str, object]) -> "PodGpBlend":
        pca = CasePCA(state["pca_mean"], state["pca_directions"], state["pca_spread"])
        gp = DesignGaussianProcess.from_state_dict(state["gp"])
        if pca.count != gp.processes:
            raise ValueError(f"the blend holds {gp.processes} Gaussian processes for {pca.count} PCA scores")
        shape = tuple(int(n) for n in state["coefficient_shape"])
        # Blends saved before `reads_code` existed read the design inputs.
        return cls(float(state["weight"]), gp, pca, (shape[0], shape[1]), int(state.get("reads_code", 0)))


class BlendedConditioner(torch.nn.Module):
    """Design inputs -> [the conditioners' flat code, the Gaussian processes' scores] side by side."""

    def __init__(self, network: torch.nn.Module, blend: PodGpBlend):
        super().__init__()
        self.network, self.gp, self.blend = network, blend.gp, blend

    def forward(self, inputs: torch.Tensor) -> MembersCode:
        code = self.network(inputs).flat().float()
        return MembersCode(torch.cat([code, self.blend.scores_of(inputs, code)], dim=1))


class BlendedDecoder(torch.nn.Module):
    """[conditioners' code, scores] -> weight x network decode + (1 - weight) x the scores' PCA coefficients.

    Mode coefficients only (projected=True): the blend is formed before the spatial basis reads them out."""

    def __init__(self, network_decoder: torch.nn.Module, blend: PodGpBlend):
        super().__init__()
        self.network_decoder, self.blend = network_decoder, blend

    def decode_flat(self, flat: torch.Tensor, projected: bool = False,
                    timesteps: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not projected:
            raise ValueError("the POD + GP blend decodes mode coefficients only (projected=True)")
        width = self.blend.scores
        network = self.network_decoder.decode_flat(flat[:, :-width], projected=True, timesteps=timesteps)
        pod_gp = self.blend.coefficients(flat[:, -width:]).to(network.device, network.dtype)
        if timesteps is not None:
            pod_gp = at_timesteps(pod_gp, timesteps)
        return self.blend.mix(network, pod_gp)

    def design_latent(self, design: torch.Tensor) -> torch.Tensor:
        """The network decoder's design-prior code, and nothing added to the Gaussian processes' scores."""
        code = self.network_decoder.design_latent(design)
        return torch.cat([code, code.new_zeros(len(code), self.blend.scores)], dim=1)
