"""`predict` latency at the seed's size: 95,008 nodes x 200 timesteps, 256 spatial modes, models in memory.

Latency does not depend on what the weights learned, so the model is built with seeded random weights through
the project's own classes: the shipped model and conditioner settings (preset.txt, input_data/condition.txt;
the MLP conditioner on the design prior), a HierarchicalVAE whose spatial basis is an orthonormal random basis
(QR of a Gaussian matrix, so the readout does the work a real basis makes it do), a fitted min-max NodeScaler,
the conditioner from `build_conditioner` in a TrainedConditioner, and the Surrogate that `predict` goes through.

For each design count, after one warm-up call, the median of --repeats calls of `Surrogate.predict` (designs in
memory -> float32 fields [designs, timesteps, nodes] in physical units) against the floor of writing that output:
`np.save` of the returned array to a temporary folder (to the page cache), and the tool's own `save_array` (temp
file + fsync + rename, what the `predict` command does). One more, instrumented call splits predict into its
stages: conditioner (with the design prior), decoder MLP, the field readout (the basis readout and the scaler's
inverse folded into one matrix product, surrogate/field_readout.py) and the rest.

    python benchmarks/predict_latency.py [--nodes 95008] [--timesteps 200] [--modes 256] [--repeats 5]
        [--designs 1,32]

Prints figures only: the issue's goals (one design under 50 ms, 32 designs under 0.5 s on 2 CPU cores) are shown
beside them, met or not met, and nothing fails on timing. 32 designs at full size hold 2.4 GB of output, and
the run needs about three times that in memory at its peak.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules.config.legacy_files import load_run_config  # noqa: E402
from modules.config.schema import RunConfig  # noqa: E402
from modules.data.input_scaler import InputScaler  # noqa: E402
from modules.data.scaling import NodeScaler  # noqa: E402
from modules.models.conditioners import build_conditioner, count_parameters  # noqa: E402
from modules.models.vae import HierarchicalVAE  # noqa: E402
from modules.storage.array_files import save_array  # noqa: E402
from modules.surrogate.conditioner_bundle import TrainedConditioner  # noqa: E402
from modules.surrogate.surrogate import Surrogate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

GOAL_SECONDS = {1: 0.050, 32: 0.500}
"""The issue's goals for `predict` with the models loaded: design count -> seconds, on 2 CPU cores."""
GOAL_CORES = 2
TRAINING_DESIGNS = 64
"""Random designs the conditioner's input scaler is fitted on (only their mean and spread matter)."""
STAGES = ("conditioner + design prior", "decoder MLP", "field readout")


# ----------------------------------------------------------------------------- the model

def shipped_config() -> RunConfig:
    """The shipped settings: preset 1 of preset.txt and input_data/condition.txt."""
    config, _ = load_run_config(REPO / "preset.txt", REPO / "input_data" / "condition.txt")
    return config


def orthonormal_basis(num_nodes: int, num_modes: int, generator: torch.Generator) -> torch.Tensor:
    """[num_nodes, num_modes] float32 with orthonormal columns: Q of the QR of a Gaussian matrix."""
    if num_modes > num_nodes:
        raise ValueError(f"{num_modes} orthonormal modes need at least as many nodes, got {num_nodes}")
    gaussian = torch.randn(num_nodes, num_modes, dtype=torch.float64, generator=generator)
    return torch.linalg.qr(gaussian).Q.float()


def build_surrogate(num_nodes: int, num_timesteps: int, num_modes: int, seed: int = 0) -> Surrogate:
    """A Surrogate of the shipped model at this size, seeded random weights, on the CPU (see the docstring)."""
    config = shipped_config()
    model_config = replace(config.model, spatial_modes=num_modes)
    window = replace(config.data, num_cases=TRAINING_DESIGNS, num_timesteps=num_timesteps, num_nodes=num_nodes,
                     num_variables=1, num_timesteps_used=None, node_start=0, node_end=None)
    num_params = config.conditioner.num_params
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    vae = HierarchicalVAE(model_config, num_nodes, num_timesteps, num_modes,
                          num_params if config.uses_design_prior else 0)
    node_weights = torch.rand(num_nodes, generator=generator, dtype=torch.float64) + 0.5
    vae.basis.set_modes(orthonormal_basis(num_nodes, num_modes, generator), node_weights, scale=1.0)
    # POD-like spreads, falling off from the first mode to the last (the readout's cost does not depend on them).
    vae.set_mode_spread((1.0 / torch.arange(1, num_modes + 1, dtype=torch.float32)).reshape(1, num_modes, 1))
    vae.eval()

    # Two random snapshots per node give each node its own [min, max], as a fitted min-max scaler has.
    snapshots = 300.0 + 50.0 * rng.standard_normal((2, 1, num_nodes))
    scaler = NodeScaler().fit_arrays(snapshots)

    layout = vae.layout
    network = build_conditioner(config.conditioner, layout.main, layout.hier, layout.levels,
                                spectral_norm=model_config.spectral_norm).eval()
    input_scaler = InputScaler().fit(rng.random((TRAINING_DESIGNS, num_params)), range(TRAINING_DESIGNS))
    conditioner = TrainedConditioner(network, input_scaler, config.conditioner.input_type, 1,
                                     torch.full((layout.flat_size,), 0.1), None, config.conditioner,
                                     on_design_prior=vae.design_prior is not None)
    return Surrogate(vae, scaler, torch.device("cpu"), window, conditioner=conditioner)


def random_designs(surrogate: Surrogate, count: int, seed: int = 1) -> np.ndarray:
    """[count, num_params] float64 designs in [0, 1], as a parameter table is read."""
    return np.random.default_rng(seed).random((count, surrogate.conditioner.config.num_params))


# ----------------------------------------------------------------------------- where the time goes

class StageClock:
    """Exclusive wall time of wrapped methods: a stage called inside another is not counted twice."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self.seconds: Dict[str, float] = defaultdict(float)
        self._now = now
        self._inner: List[float] = []

    def wrap(self, name: str, method: Callable) -> Callable:
        def timed(*args, **kwargs):
            self._inner.append(0.0)
            started = self._now()
            try:
                return method(*args, **kwargs)
            finally:
                elapsed = self._now() - started
                self.seconds[name] += elapsed - self._inner.pop()
                if self._inner:
                    self._inner[-1] += elapsed
        return timed


@contextlib.contextmanager
def timed_stages(surrogate: Surrogate) -> Iterator[StageClock]:
    """While open, the surrogate's own stages (named in STAGES) record their time in the clock it yields; the
    methods are wrapped on these instances only and restored on exit."""
    clock = StageClock()
    targets = [(surrogate, "predict_latents"), (surrogate.vae.decoder, "decode_timesteps"),
               (surrogate.field_readout(), "write")]
    for (owner, attribute), name in zip(targets, STAGES):
        setattr(owner, attribute, clock.wrap(name, getattr(owner, attribute)))
    try:
        yield clock
    finally:
        for owner, attribute in targets:
            delattr(owner, attribute)


def readout_flops(surrogate: Surrogate, designs: int) -> float:
    """Multiply-adds x 2 of the field readout: [T, C] x [C, N] per design."""
    vae = surrogate.vae
    return 2.0 * designs * vae.num_nodes * vae.num_modes * vae.num_timesteps


# ----------------------------------------------------------------------------- timing

@dataclass
class Measurement:
    designs: int
    predict: List[float] = field(default_factory=list)
    """Seconds of each timed Surrogate.predict call."""
    write: List[float] = field(default_factory=list)
    """Seconds of each np.save of its output."""
    atomic_write: List[float] = field(default_factory=list)
    """Seconds of each save_array (temp file, fsync, rename) of its output."""
    output_bytes: int = 0
    stages: Dict[str, float] = field(default_factory=dict)
    """Seconds per stage of one instrumented predict call, plus 'other'."""

    @property
    def predict_ms(self) -> float:
        return 1000.0 * statistics.median(self.predict)

    @property
    def write_ms(self) -> float:
        return 1000.0 * statistics.median(self.write)

    @property
    def atomic_write_ms(self) -> float:
        return 1000.0 * statistics.median(self.atomic_write)


def measure(surrogate: Surrogate, designs: int, repeats: int, folder: Path) -> Measurement:
    """One warm-up call, then `repeats` timed (predict, np.save, save_array) rounds, then one instrumented call.
    Each output is dropped before the next call, so at most one is held at a time."""
    inputs = random_designs(surrogate, designs)
    plain, atomic = folder / "prediction.npy", folder / "prediction_atomic.npy"
    result = Measurement(designs)
    for round_index in range(repeats + 1):
        started = time.perf_counter()
        fields = surrogate.predict(inputs).fields
        predicted = time.perf_counter()
        np.save(plain, fields)
        written = time.perf_counter()
        save_array(atomic, fields)
        saved = time.perf_counter()
        result.output_bytes = fields.nbytes
        del fields
        plain.unlink()
        atomic.unlink()
        if round_index > 0:  # round 0 is the warm-up
            result.predict.append(predicted - started)
            result.write.append(written - predicted)
            result.atomic_write.append(saved - written)
    with timed_stages(surrogate) as clock:
        started = time.perf_counter()
        surrogate.predict(inputs)
        total = time.perf_counter() - started
    result.stages = {name: clock.seconds.get(name, 0.0) for name in STAGES}
    result.stages["other"] = total - sum(result.stages.values())
    return result


def goal_text(designs: int, seconds: float, cores: int) -> str:
    """'< 50 ms: met' (or 'not met'), '' for counts without a goal; flagged when this machine's core count
    is not the goal's."""
    goal = GOAL_SECONDS.get(designs)
    if goal is None:
        return ""
    verdict = "met" if seconds < goal else "not met"
    where = "" if cores == GOAL_CORES else f" (goal is for {GOAL_CORES} cores)"
    return f"< {goal * 1000:.0f} ms: {verdict}{where}"


# ----------------------------------------------------------------------------- the command

def design_counts(text: str) -> List[int]:
    """'1,32' -> [1, 32]."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) <= 0:
        raise argparse.ArgumentTypeError(f"--designs wants positive design counts separated by commas, e.g. 1,32; "
                                         f"got {text!r}")
    return counts


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def print_report(surrogate: Surrogate, measurements: Sequence[Measurement], cores: int, repeats: int,
                 build_seconds: float) -> None:
    vae, conditioner = surrogate.vae, surrogate.conditioner
    print(f"predict latency: {vae.num_nodes:,} nodes x {vae.num_timesteps} timesteps, {vae.num_modes} spatial modes "
          f"(orthonormal random basis), min-max node scaler, seeded random weights")
    print(f"model: VAE {vae.parameter_count():,} parameters (latent {vae.layout.main} + {vae.layout.levels} x "
          f"{vae.layout.hier}, decoder {vae.cfg.decoder_width} x {vae.cfg.decoder_depth}, design prior "
          f"{'on' if vae.design_prior is not None else 'off'}); MLP conditioner "
          f"{count_parameters(conditioner.model):,} parameters ({','.join(map(str, conditioner.config.mlp_widths))}, "
          f"{conditioner.config.num_params} parameters in); built in {build_seconds:.1f} s")
    print(f"machine: {cores} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads; "
          f"median of {repeats} calls after one warm-up")
    print()
    header = (f"{'designs':>7}  {'predict ms':>10}  {'write ms':>9}  {'predict/write':>13}  {'ms per design':>13}  "
              f"{'output MB':>9}  {'fsync write ms':>14}  goal")
    print(header)
    for m in measurements:
        print(f"{m.designs:>7}  {m.predict_ms:>10.1f}  {m.write_ms:>9.1f}  {m.predict_ms / m.write_ms:>13.2f}  "
              f"{m.predict_ms / m.designs:>13.1f}  {m.output_bytes / 1e6:>9.1f}  {m.atomic_write_ms:>14.1f}  "
              f"{goal_text(m.designs, m.predict_ms / 1000.0, cores)}".rstrip())
    print("write ms: np.save to a temporary folder (page cache); fsync write ms: the tool's save_array "
          "(temp file + fsync + rename), what the predict command does after predicting")
    for m in measurements:
        print(f"predict ms of each call, {m.designs} design{'s' if m.designs != 1 else ''}: "
              + ", ".join(f"{1000 * seconds:.1f}" for seconds in m.predict))
    print()
    print("one instrumented predict call, ms per stage (share of the call):")
    print(f"{'designs':>7}  " + "  ".join(f"{name:>26}" for name in (*STAGES, "other")) + f"  {'readout GFLOP/s':>15}")
    for m in measurements:
        total = sum(m.stages.values())
        cells = [f"{1000 * seconds:>17.1f} ({seconds / total:>4.0%})" for seconds in m.stages.values()]
        rate = readout_flops(surrogate, m.designs) / max(m.stages["field readout"], 1e-12) / 1e9
        print(f"{m.designs:>7}  " + "  ".join(f"{cell:>26}" for cell in cells) + f"  {rate:>15.1f}")
    print("other: the top-down pass to the case state and the rest of Surrogate.predict")
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")


def main(argv: Optional[Sequence[str]] = None) -> List[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=95008)
    parser.add_argument("--timesteps", type=int, default=200)
    parser.add_argument("--modes", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--designs", type=design_counts, default=[1, 32], help="design counts, e.g. 1,32")
    args = parser.parse_args(argv)
    if min(args.nodes, args.timesteps, args.modes, args.repeats) <= 0:
        parser.error("--nodes, --timesteps, --modes and --repeats must be positive")
    cores = available_cores()
    torch.set_num_threads(cores)
    started = time.perf_counter()
    surrogate = build_surrogate(args.nodes, args.timesteps, args.modes)
    build_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="predict_latency_") as folder:
        measurements = [measure(surrogate, count, args.repeats, Path(folder)) for count in args.designs]
    print_report(surrogate, measurements, cores, args.repeats, build_seconds)
    return measurements


if __name__ == "__main__":
    main()
