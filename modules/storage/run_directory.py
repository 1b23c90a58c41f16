"""The output folder of a run: the name of every artifact, and the rule that protects old results.

A folder that already holds results of a previous run is never written over
silently: the user chooses --resume (continue it), --out NEW_FOLDER (keep it
and start a new run elsewhere) or --overwrite (replace it file by file).
Nothing is ever deleted.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List

from modules.errors import SimulGenError

VAE_BUNDLE_NAME = "SimulGen-VAE"  # legacy path users' scripts point at (e2e_vae_model_path)
CONDITIONER_BUNDLE_NAME = "latent_conditioner.pt"


@dataclass(frozen=True)
class RunDirectory:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def last_checkpoint(self, stage: str) -> Path:
        return self.checkpoints / f"{stage}_last.pt"

    def best_checkpoint(self, stage: str) -> Path:
        return self.checkpoints / f"{stage}_best.pt"

    @property
    def vae_bundle(self) -> Path:
        return self.root / VAE_BUNDLE_NAME

    @property
    def conditioner_bundle(self) -> Path:
        return self.root / CONDITIONER_BUNDLE_NAME

    @property
    def latents(self) -> Path:
        return self.root / "latent_vectors.npz"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_text(self) -> Path:
        return self.root / "report.txt"

    @property
    def config_json(self) -> Path:
        return self.root / "config.json"

    @property
    def log_file(self) -> Path:
        return self.root / "train_log.txt"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def vae_artifacts(self) -> List[Path]:
        return [p for p in (self.vae_bundle, self.last_checkpoint("vae"), self.best_checkpoint("vae"),
                            self.latents, self.report_json) if p.exists()]

    def conditioner_artifacts(self) -> List[Path]:
        return [p for p in (self.conditioner_bundle, self.last_checkpoint("conditioner"),
                            self.best_checkpoint("conditioner")) if p.exists()]

    def guard_previous_run(self, lc_only: bool, resume: bool, overwrite: bool) -> None:
        """Refuse to start over results already in the folder unless the user said what to do with them."""
        if resume or overwrite:
            return
        found = self.conditioner_artifacts() if lc_only else self.vae_artifacts() + self.conditioner_artifacts()
        if found:
            listed = ", ".join(str(p) for p in found[:4]) + (" ..." if len(found) > 4 else "")
            raise SimulGenError(
                f"{self.root} already holds results of a previous run ({listed}). Nothing was changed. "
                f"Choose one: --resume to continue that run, --out NEW_FOLDER to keep it and start a new one, "
                f"or --overwrite to replace its files.")

    def require_resumable(self) -> None:
        if not (self.vae_bundle.exists() or self.last_checkpoint("vae").exists()
                or self.last_checkpoint("conditioner").exists()):
            raise SimulGenError(f"--resume: {self.root} holds no checkpoint to continue from "
                                f"(looked for {self.last_checkpoint('vae')}); run without --resume to start")
