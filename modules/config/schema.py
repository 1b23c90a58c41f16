"""The one typed configuration of a run.

`RunConfig` is built once (defaults < preset.txt/condition.txt < command line) by
`legacy_files.load_run_config` and passed down whole or by section. Nothing after
that reads argv, environment variables or config files.

Each section's `problems()` returns every rule it breaks as a ConfigIssue keyed by
the field's name, so all problems can be reported together; `legacy_files` turns
field names back into the file, line and legacy key the user wrote.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from modules.config import time_window
from modules.config.log_parameters import listed_columns, setting_problem
from modules.errors import ConfigIssue


LOSS_TYPE_NAMES = {1: "MSE", 2: "MAE", 3: "SmoothL1", 4: "Huber"}
E2E_LOSS_NAMES = ("MSE", "MAE", "Huber", "SmoothL1")
DECODER_STARTS = ("vae", "fresh", "auto")
RECONSTRUCTION_DECODERS = ("auto", "vae")
CONDITIONER_INPUT_TYPES = ("csv", "image")
CONDITIONER_ARCHITECTURES = ("auto", "mlp", "cnn", "vit")
IMAGE_FEATURES = ("pooled", "keypoints")
LR_SCHEDULES = ("cosine", "constant")
TIMESTEP_MODES = ("first", "spread")
NODE_SCALERS = ("minmax", "robust")


def issue(field_name: str, message: str, fix: str) -> ConfigIssue:
    """A broken rule of the field `field_name` (a section's field, or 'section.field' for RunConfig's own)."""
    return ConfigIssue(message, fix, key=field_name)


@dataclass(frozen=True)
class DataConfig:
    """Where the sweep is and which window of it to use."""

    data_number: int = 1
    """preset.txt data_No: resolves to dataset{N}.npy/.npz/.pickle."""
    num_cases: int = 1
    """Dim1: simulated designs in the sweep."""
    num_timesteps: int = 1
    """Dim2: timesteps stored per case."""
    num_nodes: int = 1
    """Dim3: mesh nodes stored per case."""
    num_variables: int = 1
    """num_var: size of a trailing variable axis; every variable is trained (see `channels`)."""
    num_timesteps_used: Optional[int] = None
    """Dim2_red: keep N of the timesteps (None = all); which ones is timestep_mode's choice."""
    timestep_mode: str = "first"
    """Dim2_red_mode: 'first' keeps the first Dim2_red timesteps; 'spread' keeps Dim2_red timesteps evenly
    spread over the whole transient, the first and the last included (see `timestep_indices`)."""
    node_start: int = 0
    """Dim3_start: first node kept."""
    node_end: Optional[int] = None
    """Dim3_end: one past the last node kept (None = all)."""
    data_path: Optional[str] = None
    """Explicit dataset file; overrides the data_No lookup."""
    coordinates_path: Optional[str] = None
    """Optional .npy/.csv of node coordinates [num_nodes, 2 or 3] for plots and VTU output."""
    generate_demo: bool = False
    """If the dataset file is missing, write the built-in demo sweep there first."""
    validation_fraction: float = 0.2
    """Share of cases held out for validation (fixed, seeded split)."""
    split_seed: int = 0
    """Seed of the train/validation/test split."""
    test_fraction: float = 0.0
    """Share of cases held out as a test split: never trained on, never used to pick an epoch, only measured in
    the report (the validation split picks the kept epochs, so its error is optimistic)."""
    split_file: Optional[str] = None
    """A JSON file {"train": [...], "test": [...], optionally "validation": [...]} of 0-based case indices that
    fixes the split instead (validation, when absent, is validation_fraction of "train", seeded)."""
    load_all: bool = True
    """True keeps the window in memory; False streams cases from the memory-mapped file."""
    num_workers: int = 0
    """DataLoader worker processes when streaming."""
    cache_cases: int = 0
    """--load_all=0: keep up to this many scaled cases in one shared-memory cache for the whole run, so later
    epochs do not read them again (0 = off; also bounded by memory.CASE_CACHE_HOST_SHARE of free memory)."""
    scaler: str = "minmax"
    """Per-node scaling: 'minmax' maps each node's training [min, max] to [-0.7, 0.7]; 'robust' maps
    median -+ robust_clip x 1.4826 MAD to it and clips beyond (data/scaling.py)."""
    robust_clip: float = 5.0
    """scaler robust: values further than this many robust standard deviations (1.4826 x MAD) from a node's
    median are clipped."""
    plot_variable: int = 0
    """With num_var > 1: the variable (0-based) the run's mesh and node plots draw."""

    @property
    def timesteps(self) -> int:
        return self.num_timesteps_used if self.num_timesteps_used is not None else self.num_timesteps

    @property
    def timestep_indices(self) -> Tuple[int, ...]:
        """The stored timesteps the window keeps, in order (what each trained timestep stands for)."""
        return time_window.kept_timesteps(self.num_timesteps, self.timesteps, self.timestep_mode)

    @property
    def node_stop(self) -> int:
        return self.node_end if self.node_end is not None else self.num_nodes

    @property
    def nodes(self) -> int:
        """Mesh nodes in the window."""
        return self.node_stop - self.node_start

    @property
    def channels(self) -> int:
        """Numbers per timestep of one windowed case, what the scaler and the VAE see: every variable of every
        node, node-major (channel = node x num_var + variable; modules.data.variables)."""
        return self.nodes * self.num_variables

    @property
    def window_text(self) -> str:
        """'40 timesteps x 1024 nodes' (with ' x 3 variables' when num_var > 1), for messages."""
        variables = f" x {self.num_variables} variables" if self.num_variables > 1 else ""
        return f"{self.timesteps} timesteps x {self.nodes} nodes{variables}"

    @property
    def num_test_cases(self) -> int:
        """Cases the seeded split holds out for the test: the share rounded (0 when test_fraction is 0)."""
        return min(round(self.num_cases * self.test_fraction), max(self.num_cases - 2, 0))

    @property
    def num_validation_cases(self) -> int:
        """Cases the seeded split holds out for validation: the share rounded, at least one, and at least one
        left to train."""
        return min(max(1, round(self.num_cases * self.validation_fraction)),
                   self.num_cases - self.num_test_cases - 1)

    @property
    def num_training_cases(self) -> int:
        return self.num_cases - self.num_validation_cases - self.num_test_cases

    def problems(self) -> List[ConfigIssue]:
        out: List[ConfigIssue] = []
        for name in ("num_cases", "num_timesteps", "num_nodes", "num_variables"):
            if getattr(self, name) <= 0:
                out.append(issue(name, f"must be a positive integer, got {getattr(self, name)}",
                            "set it to the size of that axis of your dataset"))
        if self.num_timesteps_used is not None and not 0 < self.num_timesteps_used <= self.num_timesteps:
            out.append(issue("num_timesteps_used",
                        f"must be in 1..{self.num_timesteps} (Dim2), got {self.num_timesteps_used}",
                        "make Dim2_red at most Dim2"))
        if self.timestep_mode not in TIMESTEP_MODES:
            out.append(issue("timestep_mode", f"must be first or spread, got '{self.timestep_mode}'",
                        "use first (the first Dim2_red timesteps) or spread (spread over the whole transient)"))
        elif self.timestep_mode == "spread" and self.timesteps < 2 <= self.num_timesteps:
            out.append(issue("timestep_mode", f"spread keeps the first and the last timestep, so it needs Dim2_red "
                        f">= 2, got {self.timesteps}", "raise Dim2_red to 2 or more, or use Dim2_red_mode first"))
        if self.scaler not in NODE_SCALERS:
            out.append(issue("scaler", f"must be minmax or robust, got '{self.scaler}'", "use minmax"))
        if not self.robust_clip > 0:
            out.append(issue("robust_clip", f"must be positive, got {self.robust_clip}", "use e.g. 5"))
        if self.cache_cases < 0:
            out.append(issue("cache_cases", f"must be >= 0, got {self.cache_cases}", "use 0 to turn the cache off"))
        if self.node_start < 0:
            out.append(issue("node_start", f"must be >= 0, got {self.node_start}", "set Dim3_start to 0 or more"))
        if self.node_end is not None and self.node_end > self.num_nodes:
            out.append(issue("node_end", f"must be <= Dim3 ({self.num_nodes}), got {self.node_end}",
                        "make Dim3_end at most Dim3"))
        if self.node_stop <= self.node_start:
            out.append(issue("node_start", f"must be < Dim3_end ({self.node_stop}), got {self.node_start}",
                        "make Dim3_start smaller than Dim3_end"))
        if not 0.0 < self.validation_fraction < 1.0:
            out.append(issue("validation_fraction", f"must be between 0 and 1, got {self.validation_fraction}",
                        "use e.g. 0.2 to hold out a fifth of the cases"))
        elif self.num_cases >= 1 and round(self.num_cases * self.validation_fraction) < 1:
            out.append(issue("validation_fraction",
                        f"holds out no case of {self.num_cases} (fraction {self.validation_fraction})",
                        "raise validation_fraction so at least one case is held out"))
        if not 0.0 <= self.test_fraction < 1.0 or self.validation_fraction + self.test_fraction >= 1.0:
            out.append(issue("test_fraction", f"must be in [0, 1) and leave cases to train beside validation_fraction "
                        f"{self.validation_fraction}, got {self.test_fraction}", "use e.g. 0.1, or 0 for no test split"))
        if self.num_cases < 2:
            out.append(issue("num_cases", f"needs at least 2 cases (one to train, one to validate), got {self.num_cases}",
                        "use a sweep with more cases"))
        if self.num_workers < 0:
            out.append(issue("num_workers", f"must be >= 0, got {self.num_workers}", "use 0 to load in the main process"))
        if self.num_variables > 0 and not 0 <= self.plot_variable < self.num_variables:
            out.append(issue("plot_variable", f"must be in 0..{self.num_variables - 1} (num_var {self.num_variables}), "
                        f"got {self.plot_variable}", "choose a variable by its 0-based position on the variable axis"))
        return out


CASE_PCA_PATH_VALUES = ("auto", "1", "0")
DESIGN_PRIOR_VALUES = ("auto", "1", "0")
POD_GP_BLEND_VALUES = ("auto", "0")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the hierarchical VAE."""

    encoder_filters: Tuple[int, ...] = (256, 128, 64, 32)
    """preset.txt num_filter_enc: channels of each encoder level; the decoder mirrors them."""
    latent_dim_main: int = 32
    """Latent_dim_end: size of the main (deepest) latent."""
    latent_dim_hier: int = 8
    """Latent_dim: size of the hierarchical latent at each intermediate level."""
    large: bool = False
    """--size large: two convolutions per block instead of one."""
    spectral_norm: bool = False
    """Spectral normalisation on convolutions (stabilises long runs, costs speed)."""
    grad_checkpoint: bool = False
    """Recompute activations in backward to save memory on large meshes."""
    spatial_modes: int = 0
    """Spatial POD modes of the training snapshots that the VAE works on (its frozen first and last layer);
    0 = the fewest that hold `spatial_energy` of the snapshots' energy, at most MAX_AUTO_SPATIAL_MODES."""
    spatial_energy: float = 0.99999
    """With spatial_modes 0: share of the (physically weighted) snapshot energy the modes must hold."""
    decoder_width: int = 512
    """Width of the decoder's layers (its case state and its per-timestep MLP). 512 x 4 against 256 x 3: held-out
    error 0.269 / 0.302 (reconstruct / predict) against 0.305 / 0.343 on the wave sweep (README, ablations)."""
    decoder_depth: int = 4
    """Hidden layers of the per-timestep MLP that turns [case state, time] into the mode coefficients."""
    case_pca_path: str = "auto"
    """case_pca_path: 1 = start the VAE at PCA with as many components as latent numbers, through a linear path
    beside the encoder and the decoder (models/case_pca.py); 0 = no such path; auto = 1 when that PCA leaves under
    CASE_PCA_AUTO_UNEXPLAINED of the validation cases' variance unexplained (a nearly linear sweep)."""
    design_prior: str = "auto"
    """1 = train the VAE with a design-conditioned prior of the main latent (a small MLP of the designs): the
    decoder then learns a latent space laid out by the designs (README, ablations); 0 = a standard N(0, I) prior;
    auto = 1 for a parameter table, 0 for design images, whose 16 PCA scores predicted the field poorly and made
    the VAE stop early (RunConfig.uses_design_prior). Bundles written when this was a 0/1 flag load as '1'/'0'."""
    refine_steps: int = 50
    """Encoding a field (reconstruct, the report's reconstruction) refines the encoder's latent code with at most
    this many L-BFGS iterations on the field's own reconstruction error (0 = the encoder's output as it is)."""

    def __post_init__(self) -> None:
        if isinstance(self.design_prior, bool):  # saved by versions where it was a flag (bundles, checkpoints)
            object.__setattr__(self, "design_prior", "1" if self.design_prior else "0")

    @property
    def num_hier_levels(self) -> int:
        return len(self.encoder_filters) - 1

    def problems(self) -> List[ConfigIssue]:
        out: List[ConfigIssue] = []
        if not self.encoder_filters:
            out.append(issue("encoder_filters", "is empty", "list the encoder channels, e.g. 256 128 64 32"))
        elif any(f <= 0 for f in self.encoder_filters):
            out.append(issue("encoder_filters", f"must all be positive, got {list(self.encoder_filters)}",
                        "use positive channel counts, e.g. 256 128 64 32"))
        if self.latent_dim_main <= 0:
            out.append(issue("latent_dim_main", f"must be positive, got {self.latent_dim_main}", "use e.g. 32"))
        if self.latent_dim_hier <= 0:
            out.append(issue("latent_dim_hier", f"must be positive, got {self.latent_dim_hier}", "use e.g. 8"))
        if self.spatial_modes < 0:
            out.append(issue("spatial_modes", f"must be >= 0, got {self.spatial_modes}",
                             "use 0 to choose the modes by spatial_energy"))
        if not 0.0 < self.spatial_energy <= 1.0:
            out.append(issue("spatial_energy", f"must be in (0, 1], got {self.spatial_energy}", "use e.g. 0.99999"))
        if self.case_pca_path not in CASE_PCA_PATH_VALUES:
            out.append(issue("case_pca_path", f"must be one of {', '.join(CASE_PCA_PATH_VALUES)}, got "
                             f"'{self.case_pca_path}'", "use auto"))
        if self.design_prior not in DESIGN_PRIOR_VALUES:
            out.append(issue("design_prior", f"must be one of {', '.join(DESIGN_PRIOR_VALUES)}, got "
                             f"'{self.design_prior}'", "use auto"))
        for name in ("decoder_width", "decoder_depth"):
            if getattr(self, name) <= 0:
                out.append(issue(name, f"must be positive, got {getattr(self, name)}", "use e.g. 256 and 3"))
        if self.refine_steps < 0:
            out.append(issue("refine_steps", f"must be >= 0, got {self.refine_steps}", "use 0 to turn it off"))
        return out


@dataclass(frozen=True)
class TrainConfig:
    """How the VAE is trained."""

    epochs: int = 100
    """Training_epochs."""
    batch_size: int = 16
    """Batch_size: the global batch (split across ranks under DDP)."""
    learning_rate: float = 1e-3
    """LearningR: peak AdamW learning rate."""
    loss_type: int = 1
    """Loss_type: 1 MSE, 2 MAE, 3 SmoothL1, 4 Huber."""
    recon_weight: float = 1.0
    """alpha: multiplies the reconstruction loss."""
    init_beta_divisor: float = 0.0
    """preset.txt init_beta_divisor: KL weight starts at 10**-divisor and rises to beta_target; 0 means no warmup."""
    beta_target: float = 1e-3
    """KL weight reached at the end of warmup."""
    beta_warmup_epochs: Optional[int] = None
    """Epochs of the linear KL warmup (None = half the epochs)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    grad_clip: float = 5.0
    """Max gradient norm (0 = no clipping)."""
    lr_schedule: str = "cosine"
    """cosine (to min_lr_fraction of the peak) or constant."""
    min_lr_fraction: float = 0.05
    """Final learning rate of the cosine schedule, as a share of the peak."""
    seed: int = 0
    """Seed for weights, sampling and shuffling."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    amp: bool = False
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a scaler); ignored on CPU. Off by default:
    on an H200 the VAE's step is bound by kernel launches (about 20 ms from 16 to 1,024 cases), so bf16's casts
    made it slower (25 against 20 ms; the demo's run 117 against 103 s) at the same held-out error (README)."""
    checkpoint_every: int = 1
    """Write the 'last' checkpoint every N epochs."""
    keep_checkpoints: int = 1
    """Keep the N newest end-of-epoch 'last' checkpoints of each stage (1: only 'last', beside 'best')."""
    early_stopping_patience: int = 0
    """Stop when validation has not improved for N epochs (0 = never)."""
    training_minutes: float = 0.0
    """Wall-clock budget of the VAE and conditioner training together (0 = none): each stage times its epochs
    and keeps those that fit its share, planned again every tenth of them (modules.training.time_budget). The
    shipped condition.txt sets 15; without the key every configured epoch runs, as before the key existed."""
    recon_iterations: int = 1
    """Recon_iter: decoder samples averaged in the reconstruction term per step."""
    physical_weighting: bool = True
    """Weight each node's reconstruction error by its physical range squared, so the loss on the
    per-node scaled data measures the error in physical units (what the report and users see)."""
    grad_accumulation_steps: int = 1
    """Sum the gradients of this many consecutive batches before each optimizer step: the effective batch is
    Batch_size x N (latent_conditioner_batch x N for the conditioner) at the memory of one batch."""
    memory_warning_fraction: float = 0.1
    """Warn during training when the memory the OS can still give falls under this share of the total (0 = never)."""
    pod_projected_training: Optional[bool] = None
    """Train on every case's spatial-mode coefficients (computed once) instead of its full field: the same loss,
    gradients and selection metric at a cost independent of the mesh size (modules.training.projected_training).
    None = whenever the settings allow it (Loss_type 1, physical_weighting 1, no augmentation or physics terms)."""
    timesteps_per_case: int = 10
    """Each training step decodes this many random timesteps of every case (0 = all): the decoder works per
    timestep, so a sample of the transient gives an unbiased loss at a cost that does not grow with Dim2 (10
    keeps the wider decoder as fast per epoch as 256 x 3 on 32 timesteps)."""
    design_alignment_weight: float = 1.0
    """Weight of the pull between the encoder's main latent and the design prior's (losses.design_loss)."""

    @property
    def warmup_epochs(self) -> int:
        if self.init_beta_divisor == 0:
            return 0
        return self.beta_warmup_epochs if self.beta_warmup_epochs is not None else max(1, self.epochs // 2)

    @property
    def init_beta(self) -> float:
        return self.beta_target if self.init_beta_divisor == 0 else 10.0 ** (-self.init_beta_divisor)

    def problems(self) -> List[ConfigIssue]:
        out: List[ConfigIssue] = []
        if self.epochs <= 0:
            out.append(issue("epochs", f"must be positive, got {self.epochs}", "set Training_epochs to e.g. 100"))
        if self.batch_size <= 0:
            out.append(issue("batch_size", f"must be positive, got {self.batch_size}", "set Batch_size to e.g. 16"))
        if not 0.0 < self.learning_rate <= 1.0:
            out.append(issue("learning_rate", f"must be in (0, 1], got {self.learning_rate}", "use e.g. 0.001"))
        if self.loss_type not in LOSS_TYPE_NAMES:
            out.append(issue("loss_type", f"must be 1, 2, 3 or 4, got {self.loss_type}",
                        "use 1 (MSE), 2 (MAE), 3 (SmoothL1) or 4 (Huber)"))
        if self.recon_weight <= 0:
            out.append(issue("recon_weight", f"must be positive, got {self.recon_weight}", "use e.g. 1000"))
        if self.init_beta_divisor < 0:
            out.append(issue("init_beta_divisor", f"must be >= 0, got {self.init_beta_divisor}",
                        "use 0 for no warmup or e.g. 7 to start the KL weight at 1e-7"))
        if self.beta_target < 0:
            out.append(issue("beta_target", f"must be >= 0, got {self.beta_target}", "use e.g. 0.001"))
        if self.beta_warmup_epochs is not None and self.beta_warmup_epochs < 0:
            out.append(issue("beta_warmup_epochs", f"must be >= 0, got {self.beta_warmup_epochs}", "use e.g. 50"))
        if self.weight_decay < 0:
            out.append(issue("weight_decay", f"must be >= 0, got {self.weight_decay}", "use e.g. 1e-4"))
        if self.grad_clip < 0:
            out.append(issue("grad_clip", f"must be >= 0, got {self.grad_clip}", "use 0 to disable clipping"))
        if self.lr_schedule not in LR_SCHEDULES:
            out.append(issue("lr_schedule", f"must be one of {', '.join(LR_SCHEDULES)}, got '{self.lr_schedule}'",
                        "use cosine or constant"))
        if not 0.0 <= self.min_lr_fraction <= 1.0:
            out.append(issue("min_lr_fraction", f"must be in [0, 1], got {self.min_lr_fraction}", "use e.g. 0.05"))
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            out.append(issue("device", f"must be auto, cpu, cuda or cuda:N, got '{self.device}'", "use --device=cpu"))
        if self.checkpoint_every <= 0:
            out.append(issue("checkpoint_every", f"must be positive, got {self.checkpoint_every}", "use 1"))
        if self.keep_checkpoints <= 0:
            out.append(issue("keep_checkpoints", f"must be 1 or more, got {self.keep_checkpoints}",
                             "use 1 to keep only the last checkpoint (the best one is always kept too)"))
        if self.early_stopping_patience < 0:
            out.append(issue("early_stopping_patience", f"must be >= 0, got {self.early_stopping_patience}",
                        "use 0 to disable early stopping"))
        if not 0.0 <= self.training_minutes < float("inf"):
            out.append(issue("training_minutes", f"must be 0 (no budget) or a positive number of minutes, got "
                             f"{self.training_minutes}", "use e.g. 15, or 0 to run every configured epoch"))
        if self.grad_accumulation_steps <= 0:
            out.append(issue("grad_accumulation_steps", f"must be 1 or more, got {self.grad_accumulation_steps}",
                        "use 1 for one optimizer step per batch"))
        if not 0.0 <= self.memory_warning_fraction < 1.0:
            out.append(issue("memory_warning_fraction", f"must be in [0, 1), got {self.memory_warning_fraction}",
                        "use e.g. 0.1 to warn when under a tenth of the memory is free, or 0 to never warn"))
        if self.recon_iterations <= 0:
            out.append(issue("recon_iterations", f"must be positive, got {self.recon_iterations}", "use 1"))
        if self.timesteps_per_case < 0:
            out.append(issue("timesteps_per_case", f"must be >= 0, got {self.timesteps_per_case}",
                             "use 0 to decode every timestep in each step"))
        if self.design_alignment_weight < 0:
            out.append(issue("design_alignment_weight", f"must be >= 0, got {self.design_alignment_weight}",
                             "use e.g. 1"))
        if self.pod_projected_training and self.loss_type != 1:
            out.append(issue("pod_projected_training", f"needs Loss_type 1 (MSE), got {self.loss_type}: only a squared "
                        "error reduces exactly to the POD coefficients", "set Loss_type 1, or pod_projected_training 0"))
        if self.pod_projected_training and not self.physical_weighting:
            out.append(issue("pod_projected_training", "needs physical_weighting 1: the POD modes are orthonormal in the "
                        "physically weighted metric, so only that loss reduces exactly to their coefficients",
                        "set physical_weighting 1, or pod_projected_training 0"))
        return out


@dataclass(frozen=True)
class AugmentationConfig:
    """On-the-fly augmentation of training batches (never of validation); every probability 0 = off."""

    time_warp_probability: float = 0.0
    """Share of VAE training cases whose transient is stretched in time (a new plausible case)."""
    time_warp_range: float = 0.05
    """Stretch factors are drawn from [1 - range, 1 + range]."""
    node_mask_probability: float = 0.0
    """Share of VAE training cases whose input has a block of nodes masked (denoising)."""
    node_mask_fraction: float = 0.05
    """Share of the nodes in the masked block."""
    noise_probability: float = 0.0
    """Share of VAE training cases whose input gets Gaussian noise (denoising)."""
    noise_std_range: Tuple[float, float] = (0.005, 0.02)
    """Noise standard deviation, in scaled units (data span [-0.7, 0.7]), drawn per case from this range."""
    param_noise_probability: float = 0.0
    """Share of conditioner training designs whose standardised parameters get Gaussian jitter."""
    param_noise_std: float = 0.02
    """Standard deviation of that jitter, in standard deviations of each parameter."""
    image_noise_probability: float = 0.0
    """Share of conditioner training images (CNN/ViT) that get Gaussian pixel noise."""
    image_noise_std: float = 0.05
    """That noise's standard deviation, in standard deviations of the training images' pixels."""
    image_blur_probability: float = 0.0
    """Share of conditioner training images (CNN/ViT) blurred by a Gaussian of a random width."""
    image_blur_sigma: float = 0.6
    """The blur's width is drawn from [0, this] pixels (of the image_size x image_size input)."""

    @property
    def images_active(self) -> bool:
        return self.image_noise_probability > 0 or self.image_blur_probability > 0

    def problems(self) -> List[ConfigIssue]:
        out: List[ConfigIssue] = []
        for name in ("time_warp_probability", "node_mask_probability", "noise_probability", "param_noise_probability",
                     "image_noise_probability", "image_blur_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                out.append(issue(name, f"must be in [0, 1], got {getattr(self, name)}", "use 0 to turn it off"))
        if not 0.0 <= self.time_warp_range < 1.0:
            out.append(issue("time_warp_range", f"must be in [0, 1), got {self.time_warp_range}", "use e.g. 0.05"))
        if not 0.0 < self.node_mask_fraction < 1.0:
            out.append(issue("node_mask_fraction", f"must be in (0, 1), got {self.node_mask_fraction}", "use e.g. 0.05"))
        low, high = self.noise_std_range
        if not 0.0 <= low <= high:
            out.append(issue("noise_std_range", f"must be 0 <= low <= high, got ({low}, {high})", "use e.g. 0.005 0.02"))
        if self.param_noise_std < 0:
            out.append(issue("param_noise_std", f"must be >= 0, got {self.param_noise_std}", "use e.g. 0.02"))
        if self.image_noise_std < 0:
            out.append(issue("image_noise_std", f"must be >= 0, got {self.image_noise_std}", "use e.g. 0.05"))
        if not 0.0 <= self.image_blur_sigma <= 3.0:
            out.append(issue("image_blur_sigma", f"must be in [0, 3] pixels, got {self.image_blur_sigma}",
                        "use e.g. 0.6: a wider blur erases the drawing's edges, which carry the design"))
        return out


@dataclass(frozen=True)
class PhysicsLossConfig:
    """Optional physics-aware terms added to the VAE's reconstruction loss (every weight 0 = off).

    Each term compares reconstruction and target in the VAE's scaled units, so a weight
    of 1 makes the term count about as much as the reconstruction itself."""

    temporal_weight: float = 0.0
    """Matches the time derivative (differences of consecutive timesteps) of every node."""
    spatial_weight: float = 0.0
    """Matches differences across the mesh's edges (needs coordinates_path or mesh_connectivity_path)."""
    conservation_weight: float = 0.0
    """Matches the per-timestep sum over nodes (mean over nodes, so it does not grow with the mesh)."""
    connectivity_path: Optional[str] = None
    """Mesh edges: a .npy/.csv of node index pairs [E, 2], or a mesh file meshio reads (cells become edges)."""
    neighbours: int = 6
    """Without a connectivity file: each node is joined to its k nearest neighbours by coordinates."""
    adaptive_weighting: bool = False
    """Rescale each physics term during training so it keeps the share of the loss its weight asks for."""

    @property
    def active(self) -> bool:
        return self.temporal_weight > 0 or self.spatial_weight > 0 or self.conservation_weight > 0

    def problems(self) -> List[ConfigIssue]:
        out: List[ConfigIssue] = []
        for name in ("temporal_weight", "spatial_weight", "conservation_weight"):
            if getattr(self, name) < 0:
                out.append(issue(name, f"must be >= 0, got {getattr(self, name)}", "use 0 to turn the term off"))
        if self.neighbours <= 0:
            out.append(issue("neighbours", f"must be positive, got {self.neighbours}", "use e.g. 6"))
        return out


@dataclass(frozen=True)
class ConditionerConfig:
    """The latent conditioner: design inputs -> latent codes."""

    num_params: int = 1
    """num_param: parameters per design (CSV columns); not used with image designs."""
    param_dir: str = ""
    """CSV file, folder of CSVs, or folder of images."""
    input_type: str = "csv"
    """csv (legacy 'csvs') or image."""
    param_data_type: str = ".csv"
    """File extension of the inputs in param_dir."""
    architecture: str = "auto"
    """auto (mlp for csv, cnn for images), mlp, cnn or vit."""
    filters: Tuple[int, ...] = (64, 128, 64)
    """preset.txt latent_conditioner_filter: hidden widths (channel widths of the CNN, sizes of the ViT)."""
    mlp_widths: Tuple[int, ...] = ()
    """latent_conditioner_mlp_widths: hidden widths of the MLP conditioner; empty = `filters`. Its own key because
    the MLP on a handful of parameters wants wide layers (512 x 512 predicted held-out designs at 0.43 where
    64-128-64 reached 0.62, README ablations) that would make the CNN's convolutions far too heavy."""
    epochs: int = 200
    """n_epoch."""
    learning_rate: float = 1e-3
    """latent_conditioner_lr."""
    batch_size: int = 16
    """latent_conditioner_batch."""
    weight_decay: float = 1e-4
    """latent_conditioner_weight_decay."""
    dropout_rate: float = 0.1
    """latent_conditioner_dropout_rate."""
    use_spatial_attention: bool = False
    """CNN conditioner: spatial attention after the ResNet stages."""
    image_size: int = 64
    """Images are resized to image_size x image_size."""
    image_coordinates: bool = True
    """CNN conditioner: two pixel-coordinate channels (x, y in [-1, 1]) beside the image (CoordConv, Liu et al.
    2018), so that where something is drawn survives the global pooling; bundles saved before the key load
    without them."""
    image_features: str = "keypoints"
    """CNN conditioner: pooled (the last map's average) or keypoints (soft-argmax positions, the average and the
    stem's gray levels; models/conditioner_cnn.py); bundles saved before the key load as pooled."""
    image_gray_levels: int = 8
    """CNN conditioner with keypoints: also read, per gray level of L (this many; 0 = off), where the drawing uses
    it, how much and where relative to the other levels (models/conditioner_cnn.GrayLevelGeometry); bundles saved
    before the key load with 0. Front-dev's drawings 0.847 -> 0.585, impact-dev's 0.313 -> 0.352 (README)."""
    early_stopping_patience: int = 0
    """Stop when validation has not improved for N epochs (0 = never)."""
    image_pca_components: int = 0
    """Images only: project each image onto this many PCA components of the training images and
    feed those numbers to an MLP (0 = feed the pixels to the CNN/ViT)."""
    ensemble_members: int = 1
    """conditioner_ensemble: train this many prediction paths (conditioner + its own decoder) from different
    seeds and predict their mean (models/ensemble.py); needs the fresh prediction decoder. Each member costs
    one conditioner's training time."""
    pod_gp_blend: str = "auto"
    """pod_gp_blend: auto = predict w x (the conditioners' field) + (1 - w) x (POD + Gaussian processes' field),
    w in 0, 0.1, ..., 1 picked on the validation designs (models/pod_gp_blend.py); 0 = the conditioners alone."""
    amplitude_parameter: str = "auto"
    """Parameter tables with end-to-end training: predict the field as r x a unit field, r = this parameter (its
    1-based column) over its training mean, for fields proportional to a load's amplitude (linear physics;
    models/amplitude.py). auto: the parameter whose division helps POD + GP predict the validation designs by 10 %
    or more, if any (training/amplitude_choice.py); none: never."""
    log_parameters: str = "auto"
    """Parameter tables: the columns (1-based, '2,5') the conditioners and Gaussian processes read as their natural
    logarithm, for parameters sampled log-uniformly (a diffusivity over a factor of several). auto: the columns whose
    training values are far more evenly spread as logarithms (data/log_spacing.py); none: every column linear."""

    def problems(self) -> List[ConfigIssue]:
        out: List[ConfigIssue] = []
        if self.pod_gp_blend not in POD_GP_BLEND_VALUES:
            out.append(issue("pod_gp_blend", f"must be one of {', '.join(POD_GP_BLEND_VALUES)}, got "
                             f"'{self.pod_gp_blend}'", "use auto, or 0 for the conditioners alone"))
        if self.amplitude_parameter not in ("auto", "none") and not (
                self.amplitude_parameter.isdigit() and 1 <= int(self.amplitude_parameter) <= max(self.num_params, 1)):
            out.append(issue("amplitude_parameter", f"must be auto, none or a parameter's column number 1-"
                             f"{max(self.num_params, 1)}, got '{self.amplitude_parameter}'",
                             "use auto, none, or e.g. 3 for the third column of the parameter table"))
        log_problem = setting_problem(self.log_parameters, self.num_params)
        if log_problem:
            out.append(issue("log_parameters", f"{log_problem}, got '{self.log_parameters}'",
                             "use auto, none, or e.g. 5 or 2,5 for those columns of the parameter table"))
        elif self.amplitude_parameter.isdigit() and (
                int(self.amplitude_parameter) - 1 in listed_columns(self.log_parameters)):
            out.append(issue("log_parameters", f"lists parameter {self.amplitude_parameter}, the amplitude_parameter: "
                             "the field is proportional to that parameter's value, not its logarithm",
                             f"leave column {self.amplitude_parameter} out of log_parameters"))
        if self.image_features not in IMAGE_FEATURES:
            out.append(issue("image_features", f"must be one of {', '.join(IMAGE_FEATURES)}, got "
                             f"'{self.image_features}'", "use keypoints, or pooled for the previous CNN head"))
        if self.image_gray_levels != 0 and not 2 <= self.image_gray_levels <= 32:
            out.append(issue("image_gray_levels", f"must be 0 or 2-32, got {self.image_gray_levels}",
                             "use 8, or 0 to leave the gray-level geometry out"))
        if self.image_pca_components < 0:
            out.append(issue("image_pca_components", f"must be >= 0, got {self.image_pca_components}",
                        "use 0 to feed pixels, or e.g. 32"))
        # Image designs are read as pictures: num_param means nothing there (the legacy tool ships 0 with images).
        if self.num_params <= 0 and self.input_type == "csv":
            out.append(issue("num_params", f"must be positive for CSV designs (input_type csvs), got {self.num_params}",
                        "set num_param to the CSV column count"))
        if self.input_type not in CONDITIONER_INPUT_TYPES:
            out.append(issue("input_type", f"must be csv (or csvs) or image, got '{self.input_type}'", "use csvs or image"))
        if self.architecture not in CONDITIONER_ARCHITECTURES:
            out.append(issue("architecture", f"must be one of {', '.join(CONDITIONER_ARCHITECTURES)}, got '{self.architecture}'",
                        "use auto"))
        if any(width <= 0 for width in self.mlp_widths):
            out.append(issue("mlp_widths", f"must be positive widths, got {list(self.mlp_widths)}", "use e.g. 512,512"))
        if not self.filters or any(f <= 0 for f in self.filters):
            out.append(issue("filters", f"must be a non-empty list of positive widths, got {list(self.filters)}",
                        "use e.g. 64 128 64"))
        for name in ("epochs", "batch_size", "image_size"):
            if getattr(self, name) <= 0:
                out.append(issue(name, f"must be positive, got {getattr(self, name)}", "use a positive integer"))
        if not 0.0 < self.learning_rate <= 1.0:
            out.append(issue("learning_rate", f"must be in (0, 1], got {self.learning_rate}", "use e.g. 0.001"))
        if self.weight_decay < 0:
            out.append(issue("weight_decay", f"must be >= 0, got {self.weight_decay}", "use e.g. 1e-4"))
        if not 0.0 <= self.dropout_rate < 1.0:
            out.append(issue("dropout_rate", f"must be in [0, 1), got {self.dropout_rate}", "use e.g. 0.1"))
        if self.early_stopping_patience < 0:
            out.append(issue("early_stopping_patience", f"must be >= 0, got {self.early_stopping_patience}", "use 0"))
        if not 1 <= self.ensemble_members <= 10:  # the kept members are chosen among all 2^N - 1 subsets
            out.append(issue("ensemble_members", f"must be 1 to 10, got {self.ensemble_members}",
                             "use 1 (one conditioner) or e.g. 3"))
        return out


@dataclass(frozen=True)
class EndToEndConfig:
    """End-to-end conditioner training through the decoder."""

    enabled: bool = False
    """use_e2e_training."""
    loss_function: str = "MSE"
    """e2e_loss_function: MSE, MAE, Huber or SmoothL1."""
    vae_model_path: str = "model_save/SimulGen-VAE"
    """e2e_vae_model_path: the trained VAE used by --lc_only=1 and end-to-end."""
    use_latent_regularization: bool = True
    """use_latent_regularization: pull predicted latents toward the VAE's."""
    recon_weight: float = 1.0
    """LC_alpha: multiplies the field-space loss."""
    latent_reg_weight: float = 1e-3
    """latent_reg_weight."""
    finetune_decoder: bool = False
    """Also train the decoder (frozen by default)."""
    decoder_start: str = "vae"
    """e2e_decoder_start: with finetune_decoder, the prediction decoder starts from the VAE's decoder ('vae') or
    from a fresh initialisation of the same architecture ('fresh'); the VAE keeps its own for reconstruction.
    'auto' is resolved when the files are read (conditioner_rules.resolve_decoder_start): 'vae' for designs read
    as image pixels (or when the decoder is not trained), 'fresh' otherwise."""

    reconstruction_decoder: str = "auto"
    """reconstruction_decoder: auto = reconstruct (the report's reconstruction and the `reconstruct` command)
    through whichever reconstructs the validation cases best: the VAE's decoder, a kept prediction decoder, or
    (parameter designs) inverse design through the prediction path (training/reconstruction_choice.py);
    vae = always the VAE's own decoder."""

    @property
    def prediction_decoder(self) -> str:
        """Which decoder turns predicted codes into fields: 'fresh' (its own, trained with the conditioner from a
        new start), 'fine-tuned' (the VAE's, trained further with the conditioner) or 'vae' (the VAE's, frozen)."""
        if not (self.enabled and self.finetune_decoder):
            return "vae"
        return "fresh" if self.decoder_start == "fresh" else "fine-tuned"

    def problems(self) -> List[ConfigIssue]:
        out: List[ConfigIssue] = []
        if self.loss_function not in E2E_LOSS_NAMES:
            out.append(issue("loss_function", f"must be one of {', '.join(E2E_LOSS_NAMES)}, got '{self.loss_function}'",
                        "use MSE"))
        if self.recon_weight <= 0:
            out.append(issue("recon_weight", f"must be positive, got {self.recon_weight}", "use e.g. 1"))
        if self.latent_reg_weight < 0:
            out.append(issue("latent_reg_weight", f"must be >= 0, got {self.latent_reg_weight}", "use e.g. 0.001"))
        if self.reconstruction_decoder not in RECONSTRUCTION_DECODERS:
            out.append(issue("reconstruction_decoder", f"must be one of {', '.join(RECONSTRUCTION_DECODERS)}, got "
                             f"'{self.reconstruction_decoder}'", "use auto (picked on validation) or vae"))
        if self.decoder_start not in DECODER_STARTS:
            out.append(issue("decoder_start", f"must be one of {', '.join(DECODER_STARTS)}, got '{self.decoder_start}'",
                             "use vae (fine-tune the VAE's decoder) or fresh"))
        elif self.decoder_start == "fresh" and not (self.enabled and self.finetune_decoder):
            out.append(issue("decoder_start", "'fresh' trains a new prediction decoder, which needs use_e2e_training 1 "
                             "and e2e_finetune_decoder 1", "set both to 1, or e2e_decoder_start vae"))
        return out


@dataclass(frozen=True)
class RunConfig:
    """Everything one invocation needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    conditioner: ConditionerConfig = field(default_factory=ConditionerConfig)
    end_to_end: EndToEndConfig = field(default_factory=EndToEndConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    physics: PhysicsLossConfig = field(default_factory=PhysicsLossConfig)
    output_dir: str = "model_save"
    """Where models, latents, reports, logs and plots go."""
    plot_mode: int = 2
    """--plot: 0 show windows, 1 save PNGs, 2 no plots."""
    lc_only: bool = False
    """--lc_only=1: train only the conditioner on a saved VAE."""
    resume: bool = False
    """Continue from the 'last' checkpoint in output_dir."""
    overwrite: bool = False
    """Allow writing over a finished run in output_dir."""
    use_ddp: bool = False
    """Run under torchrun with DistributedDataParallel."""
    preset_path: str = "preset.txt"
    condition_path: str = "input_data/condition.txt"

    @property
    def uses_design_prior(self) -> bool:
        """design_prior resolved: auto = on for a parameter table, off for design images."""
        if self.model.design_prior == "auto":
            return self.conditioner.input_type != "image"
        return self.model.design_prior == "1"

    def problems(self) -> List[ConfigIssue]:
        out: List[ConfigIssue] = []
        for section in ("data", "model", "train", "conditioner", "end_to_end", "augmentation", "physics"):
            out += [dataclasses.replace(found, key=f"{section}.{found.key}") for found in getattr(self, section).problems()]
        if self.physics.spatial_weight > 0 and not (self.data.coordinates_path or self.physics.connectivity_path):
            out.append(issue("physics.spatial_weight", "needs the mesh: neither coordinates_path nor "
                        "mesh_connectivity_path is set", "add one of them to condition.txt, or set "
                        "physics_spatial_weight 0"))
        if self.conditioner.ensemble_members > 1 and self.end_to_end.prediction_decoder == "vae":
            out.append(issue("conditioner.ensemble_members", f"{self.conditioner.ensemble_members} members need "
                             "each its own trained prediction decoder (use_e2e_training 1, e2e_finetune_decoder 1)",
                             "set those two keys, or conditioner_ensemble 1"))
        out += self._pod_projection_problems()
        if self.plot_mode not in (0, 1, 2):
            out.append(issue("plot_mode", f"must be 0, 1 or 2, got {self.plot_mode}", "use --plot=1 to save PNGs"))
        return out

    def _pod_projection_problems(self) -> List[ConfigIssue]:
        """pod_projected_training 1 asks for a loss that never looks at the full fields (None decides alone)."""
        if not self.train.pod_projected_training:
            return []
        out: List[ConfigIssue] = []
        key = "train.pod_projected_training"
        augmentation = {"aug_node_mask_probability": self.augmentation.node_mask_probability,
                        "aug_noise_probability": self.augmentation.noise_probability,
                        "aug_time_warp_probability": self.augmentation.time_warp_probability}
        active = [name for name, probability in augmentation.items() if probability > 0]
        if active:
            out.append(issue(key, f"cannot be combined with node-space augmentation ({', '.join(active)} > 0): augmented "
                        "fields change every step, so their projection cannot be computed once",
                        f"set {' and '.join(active)} to 0, or pod_projected_training 0"))
        if self.physics.active:
            out.append(issue(key, "cannot be combined with physics terms (physics_temporal_weight, physics_spatial_weight "
                        "or physics_conservation_weight > 0): they need the full reconstructed fields",
                        "set the physics_*_weight keys to 0, or pod_projected_training 0"))
        return out

    @property
    def trains_on_coefficients(self) -> bool:
        """Whether the VAE trains on spatial-mode coefficients (pod_projected_training, None = when it can)."""
        if self.train.pod_projected_training is not None:
            return self.train.pod_projected_training
        augmentation = self.augmentation
        return (self.train.loss_type == 1 and self.train.physical_weighting and not self.physics.active
                and max(augmentation.node_mask_probability, augmentation.noise_probability,
                        augmentation.time_warp_probability) == 0)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_dict(values: Dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from `to_dict()` output (as stored in checkpoints)."""
    sections = {
        "data": DataConfig, "model": ModelConfig, "train": TrainConfig,
        "conditioner": ConditionerConfig, "end_to_end": EndToEndConfig, "augmentation": AugmentationConfig,
        "physics": PhysicsLossConfig,
    }
    kwargs: Dict[str, Any] = {}
    for key, value in values.items():
        if key in sections:
            cls = sections[key]
            known = {f.name for f in dataclasses.fields(cls)}
            section_values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in value.items() if k in known}
            kwargs[key] = cls(**section_values)
        elif key in {f.name for f in dataclasses.fields(RunConfig)}:
            kwargs[key] = value
    return RunConfig(**kwargs)
