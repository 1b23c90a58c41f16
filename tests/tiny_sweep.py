"""A tiny demo configuration shared by the tests that run the whole command (16 cases, 8 timesteps, 8x8 nodes)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Optional

REPO = Path(__file__).resolve().parents[1]


def tiny_preset(filters: str = "16 8", conditioner_filters: str = "16 16") -> str:
    return ("data_No, init_beta_divisior, num_filter_enc, latent_conditioner_filter\n"
            f"1\n3\n{filters}\n{conditioner_filters}\n")


def tiny_condition(data_dir: Path, epochs: int = 4, lc_epochs: int = 4, data_file: str = "dataset1.npy",
                   demo: int = 1, extra: str = "", vae_path: Optional[Path] = None) -> str:
    # Never the default model_save/SimulGen-VAE: that is relative to the working directory, where a user may
    # just have trained the demo, and a test must not pick that up.
    vae_path = vae_path or data_dir.parent / "no_trained_vae" / "SimulGen-VAE"
    return f"""Common params
Dim1\t16
Dim2\t8
Dim3\t64
num_var\t1
'
data_path\t{data_dir / data_file}
coordinates_path\t{data_dir}/coordinates.npy
demo_data\t{demo}
validation_fraction\t0.25
%LSH-VAE parameters
Training_epochs\t{epochs}
Batch_size\t4
LearningR\t0.003
Latent_dim\t2
Latent_dim_end\t4
Loss_type\t1
alpha\t100
Recon_iter\t1
%LatentConditioner
num_param\t5
param_dir\t{data_dir}/params.csv
n_epoch\t{lc_epochs}
latent_conditioner_lr\t0.003
latent_conditioner_batch\t4
latent_conditioner_dropout_rate\t0.0
input_type\tcsvs
e2e_vae_model_path\t{vae_path}
decoder_width\t128
decoder_depth\t2
{extra}"""


def load_entry(module_name: str) -> ModuleType:
    """SimulGen-VAE.py as a module (its name has a hyphen), so tests can call main(argv) in-process."""
    spec = importlib.util.spec_from_file_location(module_name, REPO / "SimulGen-VAE.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
