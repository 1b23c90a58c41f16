"""The whole command on a tiny demo sweep: outputs, the previous-run guard, exact resume, lc_only,
end-to-end, predict and reconstruct."""
from __future__ import annotations

import json
import re
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.errors import CheckpointError
from modules.storage.state_files import load_state, save_state
from modules.surrogate.conditioner_bundle import load_conditioner_bundle
from modules.surrogate.surrogate import Surrogate
from modules.surrogate.vae_bundle import load_vae_bundle
from modules.training.projected_training import ProjectedVAEObjective
from legacy_fixture import as_the_legacy_tool_ships_it, edit, legacy_copy
from tiny_sweep import load_entry, tiny_condition, tiny_preset

@pytest.fixture(scope="module")
def entry():
    torch.set_num_threads(1)
    return load_entry("simulgen_entry_pipeline")


def write_config(tmp_path: Path, **kwargs) -> list:
    (tmp_path / "preset.txt").write_text(tiny_preset())
    (tmp_path / "condition.txt").write_text(tiny_condition(tmp_path / "data", **kwargs))
    return ["--preset-file", str(tmp_path / "preset.txt"), "--condition", str(tmp_path / "condition.txt"),
            "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, entry):
    """One full run shared by the read-only tests below."""
    root = tmp_path_factory.mktemp("run")
    args = write_config(root)
    out = root / "out"
    assert entry.main(args + ["--out", str(out)]) == 0
    return root, out, args


def test_full_run_writes_models_latents_and_an_honest_report(trained_run):
    root, out, _ = trained_run
    for name in ("SimulGen-VAE", "latent_conditioner.pt", "latent_vectors.npz", "report.json", "report.txt",
                 "config.json", "train_log.txt", "checkpoints/vae_last.pt", "checkpoints/vae_best.pt",
                 "checkpoints/conditioner_last.pt"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard" / "vae").iterdir())
    report = json.loads((out / "report.json").read_text())
    vae = report["vae"]
    assert vae["latent_numbers"] == 4 + 1 * 2 and vae["pca_components"] == 6
    for model in ("vae", "pca"):
        for split in ("train", "val"):
            assert 0 <= vae["relative_l2"][model][split]["mean"] < 1
    lc = report["conditioner"]["prediction_relative_l2"]
    # With the POD + GP blend the conditioners alone are measured too ("network").
    blended = report["conditioner"]["pod_gp_blend"] is not None
    assert set(lc) == {"conditioner", "pod_gp", "nearest_neighbour"} | ({"network"} if blended else set())
    for stage in (vae, report["conditioner"]):  # the profile of each stage is in the report, not only the log
        phases = stage["training"]["seconds_per_phase"]
        assert set(phases) == {"data", "forward", "backward", "optimizer", "validation+checkpoints"}
        # recorded, not timed: a tiny run's forward pass can take less than the clock's resolution
        assert all(isinstance(seconds, float) and math.isfinite(seconds) for seconds in phases.values())
    text = (out / "report.txt").read_text()
    assert "PCA (6 components)" in text and "POD (6 modes) + Gaussian process" in text
    latents = np.load(out / "latent_vectors.npz")
    assert latents["main"].shape == (16, 4) and latents["hier"].shape == (16, 1, 2)
    assert latents["flat"].shape == (16, 6) and len(latents["val_indices"]) == 4
    history = load_state(out / "checkpoints" / "vae_last.pt")["history"]
    assert history["train_recon"][-1] < history["train_recon"][0]
    # design_prior auto: on for a parameter table (the VAE's prior reads the 5 parameters)
    assert load_vae_bundle(out / "SimulGen-VAE", torch.device("cpu")).model.design_features == 5


def test_saved_latents_are_the_encoders_codes_of_the_fields(trained_run):
    # The run encodes every case from its one projection pass instead of reading the sweep again.
    root, out, _ = trained_run
    surrogate = Surrogate.load(out / "SimulGen-VAE", torch.device("cpu"))
    from_fields = surrogate.encode_cases(np.load(root / "data" / "dataset1.npy"))
    saved = np.load(out / "latent_vectors.npz")
    for key in ("main", "hier", "flat"):
        np.testing.assert_allclose(saved[key], from_fields[key], rtol=1e-4, atol=1e-5)


def test_a_previous_run_is_never_overwritten_without_being_asked(trained_run, entry, capsys):
    root, out, args = trained_run
    before = (out / "SimulGen-VAE").read_bytes()
    assert entry.main(args + ["--out", str(out)]) == 1
    message = capsys.readouterr().err
    assert "already holds results of a previous run" in message and "--resume" in message and "--overwrite" in message
    assert (out / "SimulGen-VAE").read_bytes() == before


def test_reconstruct_matches_the_report(trained_run, entry, tmp_path):
    root, out, _ = trained_run
    target = tmp_path / "recon.npy"
    assert entry.main(["reconstruct", "--model", str(out), "--data", str(root / "data" / "dataset1.npy"),
                       "--out", str(target), "--device", "cpu"]) == 0
    recon, truth = np.load(target), np.load(root / "data" / "dataset1.npy")
    assert recon.shape == truth.shape and recon.dtype == np.float32
    val = json.loads((out / "report.json").read_text())["vae"]["val_case_indices"]
    errors = np.linalg.norm((recon - truth)[val].reshape(len(val), -1), axis=1) / \
        np.linalg.norm(truth[val].reshape(len(val), -1), axis=1)
    reported = json.loads((out / "report.json").read_text())["vae"]["relative_l2"]["vae"]["val"]["mean"]
    assert errors.mean() == pytest.approx(reported, rel=1e-4)
    assert entry.main(["reconstruct", "--model", str(out), "--data", str(root / "data" / "dataset1.npy"),
                       "--out", str(target), "--device", "cpu"]) == 1  # exists: refused


def test_predict_gives_fields_in_physical_units_with_an_uncertainty_band(trained_run, entry, tmp_path):
    root, out, _ = trained_run
    designs = tmp_path / "designs.csv"
    lines = (root / "data" / "params.csv").read_text().splitlines()
    designs.write_text("\n".join(lines[:4]) + "\n")  # header + 3 designs
    target = tmp_path / "pred.npy"
    assert entry.main(["predict", "--model", str(out), "--params", str(designs), "--out", str(target),
                       "--samples", "6", "--vtu", str(tmp_path / "vtu"), "--device", "cpu"]) == 0
    prediction = np.load(target)
    mean, std = np.load(tmp_path / "pred_mean.npy"), np.load(tmp_path / "pred_std.npy")
    truth = np.load(root / "data" / "dataset1.npy")
    assert prediction.shape == (3, 8, 64) and prediction.dtype == np.float32
    assert mean.shape == std.shape == prediction.shape and (std >= 0).all() and std.max() > 0
    # physical units (the plate starts at 20 C), not the scaled [-0.7, 0.7] range
    assert abs(prediction.mean() - truth.mean()) < 0.5 * (truth.max() - truth.min())
    assert np.abs(mean - prediction).mean() < 3 * std.mean() + 1e-6
    # The calibrated band: prediction +- scale x std, the scale saved with the conditioner and reported.
    lower, upper = np.load(tmp_path / "pred_lower.npy"), np.load(tmp_path / "pred_upper.npy")
    band = json.loads((out / "report.json").read_text())["conditioner"]["band"]
    assert band["nominal"] == 0.9 and band["scale"] > 0 and set(band["coverage"]) == {"val"}
    assert 0.0 <= band["coverage"]["val"] <= 1.0
    # The validation coverage comes from the calibration pass; a second pass over those cases measures the same.
    from modules.evaluation.band_coverage import band_coverage
    surrogate = Surrogate.load(out / "SimulGen-VAE", torch.device("cpu"), out / "latent_conditioner.pt")
    val = np.asarray(json.loads((out / "report.json").read_text())["vae"]["val_case_indices"])
    all_designs = np.loadtxt(root / "data" / "params.csv", delimiter=",", skiprows=1)
    again = band_coverage(surrogate, all_designs, {"val": val}, truth, surrogate.window)
    assert again["val"] == pytest.approx(band["coverage"]["val"], abs=1e-9)
    assert np.all(lower <= prediction) and np.all(prediction <= upper)
    np.testing.assert_allclose(prediction - lower, upper - prediction, rtol=1e-5, atol=1e-5)
    widths = surrogate.band_widths(all_designs[:3])  # the band of each design: scale x its width x std
    assert np.allclose(upper - prediction, band["scale"] * widths[:, None, None] * std, rtol=1e-4,
                       atol=1e-4 * std.max())
    assert (tmp_path / "vtu" / "design_0003.pvd").is_file()
    assert len(list((tmp_path / "vtu").glob("design_0001_t*.vtu"))) == 8
    import meshio
    cells = meshio.read(tmp_path / "vtu" / "design_0001_t0000.vtu").cells_dict
    assert set(cells) == {"triangle"} and len(cells["triangle"]) == 2 * 7 * 7  # the 8 x 8 plate, saved with the VAE


def test_predict_at_some_channels_gives_those_columns_of_the_whole_prediction(trained_run, monkeypatch):
    # What the band's calibration and coverage use on a large mesh: the same draws, decoded at a few nodes.
    from modules.data.sweep_file import open_sweep
    from modules.evaluation import band_coverage
    root, out, _ = trained_run
    surrogate = Surrogate.load(out / "SimulGen-VAE", torch.device("cpu"), out / "latent_conditioner.pt")
    designs = np.loadtxt(root / "data" / "params.csv", delimiter=",", skiprows=1, ndmin=2)
    channels = np.array([0, 7, 30, 63])
    whole = surrogate.predict(designs[:3], samples=4, seed=2)
    part = surrogate.predict(designs[:3], samples=4, seed=2, channels=channels)
    for name in ("fields", "mean", "std", "lower", "upper"):
        np.testing.assert_allclose(getattr(part, name), getattr(whole, name)[:, :, channels], rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(band_coverage, "BAND_CHANNELS", 5)
    window = surrogate.window
    array = open_sweep(root / "data" / "dataset1.npy")
    indices = np.array([1, 4])
    (truth, center, std), = band_coverage._sampled_chunks(surrogate, designs, indices, array, window)
    assert truth.shape == center.shape == std.shape == (2, 8, 5)
    full = surrogate.predict(designs[indices], samples=band_coverage.BAND_SAMPLES, seed=0)
    columns = band_coverage.scored_channels(64)
    assert len(set(columns)) == 5 and band_coverage.scored_channels(5) is None
    np.testing.assert_allclose(center, full.fields[:, :, columns], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(truth, array[indices][:, :, columns])


def test_the_band_of_each_design_is_scaled_by_the_saved_design_spread(trained_run, tmp_path):
    root, out, _ = trained_run
    surrogate = Surrogate.load(out / "SimulGen-VAE", torch.device("cpu"), out / "latent_conditioner.pt")
    conditioner = surrogate.conditioner
    assert conditioner.band_spread is not None  # parameter designs: fitted and saved with the band
    assert json.loads((out / "report.json").read_text())["conditioner"]["band"]["design_spread"] is True
    designs = np.loadtxt(root / "data" / "params.csv", delimiter=",", skiprows=1, ndmin=2)
    far = designs[:1] + 3 * (designs.max(axis=0) - designs.min(axis=0))  # well outside the sweep
    both = np.concatenate([designs[:1], far])
    widths = surrogate.band_widths(both)
    assert widths[1] > widths[0]
    from dataclasses import replace
    # The same draws as without the spread; only the band's half-width is scaled by each design's width.
    plain = replace(surrogate, conditioner=replace(conditioner, band_spread=None)).predict(both, samples=5, seed=3)
    got = surrogate.predict(both, samples=5, seed=3)
    np.testing.assert_array_equal(got.std, plain.std)
    np.testing.assert_allclose(got.upper - got.fields, (plain.upper - plain.fields) * widths[:, None, None],
                               rtol=1e-4, atol=8 * np.finfo(np.float32).eps * float(np.abs(got.fields).max()))
    # A bundle written before the spread existed draws as wide for every design; a damaged one is refused.
    bundle = load_state(out / "latent_conditioner.pt")
    spread = bundle.pop("band_spread")
    save_state(tmp_path / "old.pt", bundle)
    assert Surrogate.load(out / "SimulGen-VAE", torch.device("cpu"),
                          tmp_path / "old.pt").conditioner.band_spread is None
    bundle["band_spread"] = {**spread, "cholesky": spread["cholesky"][:-1]}
    save_state(tmp_path / "damaged.pt", bundle)
    with pytest.raises(CheckpointError, match=r"damaged\.pt: band_spread .* is damaged.*retrain the conditioner"):
        Surrogate.load(out / "SimulGen-VAE", torch.device("cpu"), tmp_path / "damaged.pt")


def test_predict_refuses_a_design_without_a_logarithm_naming_the_file_and_line(trained_run, entry, tmp_path, capsys):
    root, out, _ = trained_run  # its conditioner reads parameter 5 (the diffusivity) as its logarithm
    lines = (root / "data" / "params.csv").read_text().splitlines()
    cells = lines[2].split(",")
    designs = tmp_path / "designs.csv"
    designs.write_text("\n".join([lines[0], lines[1], ",".join(cells[:4] + ["0"])]) + "\n")
    target = tmp_path / "p.npy"
    assert entry.main(["predict", "--model", str(out), "--params", str(designs), "--out", str(target),
                       "--device", "cpu"]) == 1
    assert (f"--params {designs}, line 3: parameter 5 is 0, but this model reads that parameter as its logarithm"
            in capsys.readouterr().err)
    assert not target.exists()


def test_predict_refuses_images_for_a_csv_model(trained_run, entry, tmp_path, capsys):
    _, out, _ = trained_run
    assert entry.main(["predict", "--model", str(out), "--images", str(tmp_path), "--out",
                       str(tmp_path / "p.npy"), "--device", "cpu"]) == 1
    assert "trained on CSV parameters; pass --params" in capsys.readouterr().err


def test_lc_only_retrains_the_conditioner_and_keeps_the_vae(trained_run, entry, tmp_path):
    root, out, args = trained_run
    copy = tmp_path / "out"
    import shutil

    shutil.copytree(out, copy)
    vae_before = (copy / "SimulGen-VAE").read_bytes()
    lc_before = (copy / "latent_conditioner.pt").read_bytes()
    condition = tmp_path / "condition.txt"
    condition.write_text(tiny_condition(root / "data", vae_path=copy / "SimulGen-VAE"))
    assert entry.main(args[:2] + ["--condition", str(condition)] + args[4:] +
                      ["--out", str(copy), "--lc_only=1", "--overwrite", "--seed", "7"]) == 0
    assert (copy / "SimulGen-VAE").read_bytes() == vae_before
    assert (copy / "latent_conditioner.pt").read_bytes() != lc_before
    assert f"VAE: projection read from {copy / 'projection.pt'}" in (copy / "train_log.txt").read_text()
    history = load_state(copy / "checkpoints" / "conditioner_last.pt")["history"]
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_lc_only_trains_image_designs_on_a_vae_trained_with_the_parameters(trained_run, entry, tmp_path):
    """design_prior auto resolves off for images: the VAE reused from a parameter run (its prior on) is still
    accepted, keeps its prior, and the image conditioner does not start on it (it reads parameters)."""
    import shutil

    root, out, args = trained_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    vae_before = (copy / "SimulGen-VAE").read_bytes()
    condition = tmp_path / "condition.txt"
    condition.write_text(tiny_condition(root / "data", vae_path=copy / "SimulGen-VAE", extra="image_size\t16\n")
                         .replace("input_type\tcsvs", "input_type\timage")
                         .replace(f"param_dir\t{root / 'data'}/params.csv", f"param_dir\t{root / 'data'}/images"))
    assert entry.main(args[:2] + ["--condition", str(condition)] + args[4:] +
                      ["--out", str(copy), "--lc_only=1", "--overwrite"]) == 0
    assert (copy / "SimulGen-VAE").read_bytes() == vae_before
    report = json.loads((copy / "report.json").read_text())["conditioner"]
    assert report["input_type"] == "image" and report["on_design_prior"] is False
    assert load_vae_bundle(copy / "SimulGen-VAE", torch.device("cpu")).model.design_features == 5


def test_the_log_uniform_diffusivity_is_read_as_a_logarithm_by_the_prior_and_the_conditioner_alike(
        trained_run, entry, tmp_path):
    """The demo samples its diffusivity (parameter 5) log-uniformly: log_parameters auto reads it as its logarithm
    in the VAE's design prior and in the conditioner; a conditioner retrained on that VAE with log_parameters none
    still reads it as the prior did (it feeds the prior its inputs), and the log says so."""
    import shutil

    root, out, args = trained_run
    assert load_vae_bundle(out / "SimulGen-VAE", torch.device("cpu")).design_log_columns == (4,)
    assert load_conditioner_bundle(out / "latent_conditioner.pt", torch.device("cpu")).input_scaler.log_columns == (4,)
    assert "design inputs: parameter 5 read as its logarithm (log_parameters auto" in (out / "train_log.txt").read_text()
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    condition = tmp_path / "condition.txt"
    condition.write_text(tiny_condition(root / "data", vae_path=copy / "SimulGen-VAE", extra="log_parameters\tnone\n"))
    assert entry.main(args[:2] + ["--condition", str(condition)] + args[4:] +
                      ["--out", str(copy), "--lc_only=1", "--overwrite"]) == 0
    assert load_conditioner_bundle(copy / "latent_conditioner.pt", torch.device("cpu")).input_scaler.log_columns == (4,)
    assert ("log_parameters none would read no parameter as logarithms, but the reused VAE's design prior read "
            "parameter 5" in (copy / "train_log.txt").read_text())


def test_lc_only_without_a_trained_vae_is_a_clear_error(entry, tmp_path, capsys):
    args = write_config(tmp_path)
    assert entry.main(args + ["--out", str(tmp_path / "fresh"), "--lc_only=1"]) == 1
    message = capsys.readouterr().err
    assert "--lc_only=1 needs a trained VAE: none at" in message and "e2e_vae_model_path" in message
    assert not (tmp_path / "fresh" / "latent_conditioner.pt").exists()


def test_plots_on_screen_without_a_display_are_refused_before_anything_is_read_or_trained(entry, tmp_path, capsys):
    import matplotlib
    matplotlib.use("Agg")  # what a machine without a display gets
    args = write_config(tmp_path)
    assert entry.main(args + ["--out", str(tmp_path / "out"), "--plot=0"]) == 1
    assert "plots were asked to open windows (--plot=0)" in capsys.readouterr().err
    assert not (tmp_path / "out" / "SimulGen-VAE").exists() and not (tmp_path / "out" / "checkpoints").exists()
    log = tmp_path / "out" / "train_log.txt"
    assert not log.exists() or "data:" not in log.read_text()


def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(entry, tmp_path, monkeypatch):
    args = write_config(tmp_path, epochs=3, lc_epochs=1)
    assert entry.main(args + ["--out", str(tmp_path / "straight")]) == 0

    original = ProjectedVAEObjective.__call__
    calls = {"n": 0}

    def interrupting(self, model, batch, epoch):
        if model.training:
            calls["n"] += 1
            if calls["n"] == 5:  # epoch 2, second batch (3 batches per epoch)
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, model, batch, epoch)

    monkeypatch.setattr(ProjectedVAEObjective, "__call__", interrupting)
    assert entry.main(args + ["--out", str(tmp_path / "broken")]) == 130
    monkeypatch.setattr(ProjectedVAEObjective, "__call__", original)
    stopped = load_state(tmp_path / "broken" / "checkpoints" / "vae_last.pt")
    assert (stopped["epoch"], stopped["batches_done"]) == (1, 2)
    assert entry.main(args + ["--out", str(tmp_path / "broken"), "--resume"]) == 0
    straight = load_state(tmp_path / "straight" / "SimulGen-VAE")["model"]
    resumed = load_state(tmp_path / "broken" / "SimulGen-VAE")["model"]
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_end_to_end_training_lowers_the_field_loss(entry, tmp_path):
    extra = "use_e2e_training\t1\ne2e_loss_function\tMSE\nLC_alpha\t10\nlatent_reg_weight\t0.01\n"
    args = write_config(tmp_path, epochs=3, lc_epochs=6, extra=extra)
    assert entry.main(args + ["--out", str(tmp_path / "out")]) == 0
    history = load_state(tmp_path / "out" / "checkpoints" / "conditioner_last.pt")["history"]
    assert history["train_field"][-1] < history["train_field"][0]
    assert "conditioner + decoder (end-to-end, on the design prior, epoch " in (tmp_path / "out" / "report.txt").read_text()


def test_a_fresh_prediction_decoder_is_saved_with_the_conditioner_and_leaves_the_vae_its_own(entry, tmp_path):
    extra = "use_e2e_training\t1\nuse_latent_regularization\t0\ne2e_finetune_decoder\t1\ne2e_decoder_start\tfresh\n"
    args = write_config(tmp_path, epochs=3, lc_epochs=6, extra=extra)
    assert entry.main(args + ["--out", str(tmp_path / "out")]) == 0
    vae = load_state(tmp_path / "out" / "SimulGen-VAE")["model"]
    prediction = load_state(tmp_path / "out" / "latent_conditioner.pt")["decoder_weights"]
    # reconstruct decodes with the VAE's decoder, predict with the conditioner's; the encoder is shared, untouched
    # (the conditioner's bundle holds the decoder only: every other weight is the VAE bundle's)
    assert not torch.equal(vae["decoder.readout.0.weight"], prediction["readout.0.weight"])
    assert set(prediction) == {name[len("decoder."):] for name in vae if name.startswith("decoder.")}
    report = (tmp_path / "out" / "report.txt").read_text()
    assert "conditioner + decoder (end-to-end, own decoder, " in report and "on the design prior" not in report
    # the VAE has a design prior, and the fresh decoder does not start on its code (a frozen offset to a new decoder)
    assert any(name.startswith("design_prior.") for name in vae)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["conditioner"]["on_design_prior"] is False
    history = load_state(tmp_path / "out" / "checkpoints" / "conditioner_last.pt")["history"]
    assert history["train_field"][-1] < history["train_field"][0]
    # Bundles written before the decoder-only format held the whole VAE's state under "vae_weights": they
    # predict as they did; without either the VAE's own decoder predicts, and differently.
    out, bundle = tmp_path / "out", load_state(tmp_path / "out" / "latent_conditioner.pt")
    decoder = bundle.pop("decoder_weights")
    bundle.pop("reconstruction_decoder", None)  # written after that format, as are the next
    bundle.pop("reconstruction_starts", None)
    bundle["vae_weights"] = {**vae, **{"decoder." + name: value for name, value in decoder.items()}}
    save_state(tmp_path / "old.pt", bundle)
    bundle.pop("vae_weights")
    save_state(tmp_path / "none.pt", bundle)
    designs = np.loadtxt(tmp_path / "data" / "params.csv", delimiter=",", skiprows=1, ndmin=2)[:4]
    now, before, none = (Surrogate.load(out / "SimulGen-VAE", torch.device("cpu"), path).predict(designs).fields
                         for path in (out / "latent_conditioner.pt", tmp_path / "old.pt", tmp_path / "none.pt"))
    np.testing.assert_array_equal(before, now)
    assert not np.allclose(none, now)


def per_case_errors(truth: np.ndarray, fields: np.ndarray) -> np.ndarray:
    return np.linalg.norm((fields - truth).reshape(len(truth), -1), axis=1) / \
        np.linalg.norm(truth.reshape(len(truth), -1), axis=1)


def reconstructed_validation_cases(entry, tmp_path: Path, out: Path, report: dict) -> None:
    """`reconstruct` on the validation cases: its errors are the report's, and not those of the VAE's own decoder."""
    truth = np.load(tmp_path / "data" / "dataset1.npy")[report["vae"]["val_case_indices"]]
    np.save(tmp_path / "val.npy", truth)
    assert entry.main(["reconstruct", "--model", str(out), "--data", str(tmp_path / "val.npy"),
                       "--out", str(tmp_path / "recon.npy"), "--device", "cpu"]) == 0
    errors = per_case_errors(truth, np.load(tmp_path / "recon.npy"))
    assert errors.mean() == pytest.approx(report["vae"]["relative_l2"]["vae"]["val"]["mean"], rel=1e-4)
    own = Surrogate.load(out / "SimulGen-VAE", torch.device("cpu")).reconstruct(truth)
    assert not np.allclose(per_case_errors(truth, own), errors, rtol=1e-3)


def assert_edited_bundle_refused(out: Path, tmp_path: Path, bundle: dict, message: str) -> None:
    """The run's VAE with `bundle` saved as an edited conditioner: loading it raises CheckpointError matching
    `message` (the file, the key, the fix)."""
    save_state(tmp_path / "edited.pt", bundle)
    with pytest.raises(CheckpointError, match=message):
        Surrogate.load(out / "SimulGen-VAE", torch.device("cpu"), tmp_path / "edited.pt")


def test_a_prediction_decoder_picked_for_reconstruction_is_what_the_report_and_reconstruct_use(entry, tmp_path,
                                                                                             monkeypatch):
    from modules.training import conditioner_stage
    picked, measure = [], conditioner_stage.pick_reconstruction_decoder

    def pick_the_member(vae, decoders, coefficients, device, starts):
        assert [tuple(codes.shape) for codes in starts] == [(12, 6)]  # its codes of the 12 training designs
        picked.append(measure(vae, decoders, coefficients, device, starts)[1])
        return 0, picked[-1]  # as validation does where the prediction decoder reconstructs better (front-dev)

    monkeypatch.setattr(conditioner_stage, "pick_reconstruction_decoder", pick_the_member)
    # inverse design is measured too (a parameter table of 5 numbers, the VAE has 6); here it loses
    monkeypatch.setattr(conditioner_stage, "design_reconstruction_error", lambda *args: float("inf"))
    args = write_config(tmp_path, epochs=3, lc_epochs=6, extra=ENSEMBLE.format(1))
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 0
    assert len(picked) == 1 and len(picked[0]) == 2  # the VAE's decoder and the one conditioner's were measured
    saved = load_state(out / "latent_conditioner.pt")
    assert saved["reconstruction_decoder"] == 0 and tuple(saved["reconstruction_starts"].shape) == (12, 6)
    report = json.loads((out / "report.json").read_text())
    assert report["vae"]["reconstruction_decoder"] == "conditioner 1"
    assert "decoded by conditioner 1's prediction decoder, picked on validation" in (out / "report.txt").read_text()
    assert "reconstruction: through conditioner 1's decoder" in (out / "train_log.txt").read_text()
    # `reconstruct` gives what the report measured, through that decoder, not through the VAE's
    reconstructed_validation_cases(entry, tmp_path, out, report)
    # a bundle naming a decoder it does not hold is refused with the file, the key and the fix
    bundle = load_state(out / "latent_conditioner.pt")
    bundle["reconstruction_decoder"] = 3
    assert_edited_bundle_refused(out, tmp_path, bundle, r"edited\.pt: reconstruction_decoder 3 names no saved "
                                                        r"prediction decoder.*retrain the conditioner")
    bundle["reconstruction_decoder"] = 0
    bundle["reconstruction_starts"] = bundle["reconstruction_starts"][:, :4]
    assert_edited_bundle_refused(out, tmp_path, bundle, r"edited\.pt: reconstruction_starts \(12, 4\) are not "
                                                        r"finite codes \[cases, 6\].*retrain the conditioner")
    # A bundle written before the second starts existed reconstructs from the encoder's code alone.
    bundle.pop("reconstruction_starts")
    save_state(tmp_path / "older.pt", bundle)
    older = Surrogate.load(out / "SimulGen-VAE", torch.device("cpu"), tmp_path / "older.pt")
    assert older.reconstruction_decoder == "conditioner 1" and older.conditioner.reconstruction_starts is None


def test_inverse_design_picked_for_reconstruction_is_what_the_report_and_reconstruct_use(entry, tmp_path,
                                                                                        monkeypatch):
    from modules.training import conditioner_stage
    measured, measure = [], conditioner_stage.design_reconstruction_error

    def design_wins(path, coefficients, candidates, steps, device):
        assert tuple(candidates.shape) == (12, 5)  # the 12 standardised training designs are its starts
        measured.append(measure(path, coefficients, candidates, steps, device))
        return 0.0  # as validation does where it reconstructs best (impact-dev)

    monkeypatch.setattr(conditioner_stage, "design_reconstruction_error", design_wins)
    args = write_config(tmp_path, epochs=3, lc_epochs=6, extra=ENSEMBLE.format(2))
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 0
    assert len(measured) == 1 and 0 < measured[0] < 2
    saved = load_state(out / "latent_conditioner.pt")
    assert tuple(saved["training_designs"].shape) == (12, 5) and saved["reconstruction_by_design"] is True
    assert "reconstruction_decoder" not in saved
    report = json.loads((out / "report.json").read_text())
    assert report["vae"]["reconstruction_decoder"] == "design"
    assert report["vae"]["reconstruction_numbers"] == 5
    assert ("inverse design (5 design numbers: the prediction of the design that matches the field best; picked on "
            "validation over the VAE, 6 latent numbers") in (out / "report.txt").read_text()
    assert "reconstruction: through the prediction path, by inverse design" in (out / "train_log.txt").read_text()
    # `reconstruct` gives what the report measured: the predictions of the inverse designs, not the VAE's decode
    reconstructed_validation_cases(entry, tmp_path, out, report)
    # --designs writes those designs: predicting them gives the reconstruction back
    assert entry.main(["reconstruct", "--model", str(out), "--data", str(tmp_path / "val.npy"), "--out",
                       str(tmp_path / "again.npy"), "--designs", str(tmp_path / "designs.csv"), "--device", "cpu"]) == 0
    # headed by the training table's column names, in its order
    header = (tmp_path / "data" / "params.csv").read_text().splitlines()[0]
    assert (tmp_path / "designs.csv").read_text().splitlines()[0] == header and header.count(",") == 4
    assert saved["parameter_names"] == header.split(",")
    assert entry.main(["predict", "--model", str(out), "--params", str(tmp_path / "designs.csv"), "--out",
                       str(tmp_path / "predicted.npy"), "--device", "cpu"]) == 0
    recon = np.load(tmp_path / "again.npy")
    np.testing.assert_allclose(np.load(tmp_path / "predicted.npy"), recon, rtol=1e-4, atol=1e-4 * np.abs(recon).max())
    # a bundle whose starts are not designs of the table's width is refused with the file, the key and the fix
    bundle = load_state(out / "latent_conditioner.pt")
    bundle["training_designs"] = bundle["training_designs"][:, :3]
    assert_edited_bundle_refused(out, tmp_path, bundle, r"edited\.pt: training_designs \(12, 3\) are not finite "
                                                        r"standardised parameter designs \[cases, 5\].*"
                                                        r"retrain the conditioner")
    bundle.pop("training_designs")
    assert_edited_bundle_refused(out, tmp_path, bundle,
                                 r"edited\.pt: reconstruction_by_design True needs training_designs")
    bundle = load_state(out / "latent_conditioner.pt")
    bundle["parameter_names"] = bundle["parameter_names"][:2]
    assert_edited_bundle_refused(out, tmp_path, bundle, r"edited\.pt: parameter_names .* are not the 5 column names "
                                                        r"of a parameter table.*retrain the conditioner")


def test_reconstruction_decoder_vae_keeps_the_vaes_decoder_without_measuring_the_others(entry, tmp_path):
    extra = ENSEMBLE.format(1) + "reconstruction_decoder\tvae\n"
    args = write_config(tmp_path, epochs=3, lc_epochs=6, extra=extra)
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 0
    assert "reconstruction_decoder" not in load_state(out / "latent_conditioner.pt")
    assert "reconstruction: through" not in (out / "train_log.txt").read_text()
    assert json.loads((out / "report.json").read_text())["vae"]["reconstruction_decoder"] == "vae"


ENSEMBLE = ("use_e2e_training\t1\nuse_latent_regularization\t0\ne2e_finetune_decoder\t1\ne2e_decoder_start\tfresh\n"
            "conditioner_ensemble\t{}\n")


def predicted_val_errors_and_report(tmp_path: Path, out: Path):
    """(mean relative error of `predict` on the validation designs, from the saved files; the report.json)."""
    report = json.loads((out / "report.json").read_text())
    surrogate = Surrogate.load(out / "SimulGen-VAE", torch.device("cpu"), out / "latent_conditioner.pt")
    val = report["vae"]["val_case_indices"]
    designs = np.loadtxt(tmp_path / "data" / "params.csv", delimiter=",", skiprows=1)[val]
    truth = np.load(tmp_path / "data" / "dataset1.npy")[val]
    predicted = surrogate.predict(designs).fields
    errors = np.linalg.norm((predicted - truth).reshape(len(val), -1), axis=1) / \
        np.linalg.norm(truth.reshape(len(val), -1), axis=1)
    return errors.mean(), report, surrogate, designs


def test_ensemble_members_train_as_runs_of_their_own_seeds_and_the_best_on_validation_are_kept(entry, tmp_path):
    args = write_config(tmp_path, epochs=3, lc_epochs=6, extra=ENSEMBLE.format(3))
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 0
    bundle = load_state(out / "latent_conditioner.pt")
    kept = bundle["ensemble_kept"]
    assert bundle["ensemble_trained"] == 3 and 1 <= len(kept) <= 3 and kept == sorted(kept)
    assert bundle.get("ensemble_members", 1) == len(kept) == len(bundle.get("member_decoder_weights", [])) + 1
    # The model holds the kept members: the first kept one's conditioner and decoder are its checkpoint's.
    stage = "conditioner" if kept[0] == 0 else f"conditioner_member{kept[0] + 1}"
    trained = load_state(out / "checkpoints" / f"{stage}_best.pt")["model"]
    prefix = "members.0." if len(kept) > 1 else ""
    assert all(torch.equal(value, bundle["model"][prefix + name[len("conditioner."):]])
               for name, value in trained.items() if name.startswith("conditioner."))
    assert all(torch.equal(value, bundle["decoder_weights"][name[len("vae.decoder."):]])
               for name, value in trained.items() if name.startswith("vae.decoder."))
    error, report, _, _ = predicted_val_errors_and_report(tmp_path, out)
    assert report["conditioner"]["ensemble_kept"] == [member + 1 for member in kept]
    assert error == pytest.approx(report["conditioner"]["prediction_relative_l2"]["conditioner"]["val"]["mean"],
                                  rel=1e-4)
    # Member 1 is exactly the run without an ensemble.
    single = tmp_path / "single"
    single.mkdir()
    args = write_config(single, epochs=3, lc_epochs=6, extra=ENSEMBLE.format(1))
    assert entry.main(args + ["--out", str(single / "out")]) == 0
    alone = load_state(single / "out" / "checkpoints" / "conditioner_best.pt")["model"]
    first = load_state(out / "checkpoints" / "conditioner_best.pt")["model"]
    assert "ensemble_trained" not in load_state(single / "out" / "latent_conditioner.pt")
    assert all(torch.equal(value, first[name]) for name, value in alone.items())


@pytest.mark.parametrize("start", ["fresh", "vae"])
def test_an_ensemble_predicts_the_mean_of_its_members_and_the_report_measures_that_prediction(entry, tmp_path,
                                                                                               monkeypatch, start):
    """Each member trains its own decoder: a fresh one, or its own copy of the VAE's fine-tuned (image designs'
    default, e2e_decoder_start auto)."""
    from modules.training import conditioner_stage
    monkeypatch.setattr(conditioner_stage, "best_subset", lambda predictions, truth: (list(range(len(predictions))), 0.0))
    extra = ENSEMBLE.format(2).replace("e2e_decoder_start\tfresh", f"e2e_decoder_start\t{start}")
    args = write_config(tmp_path, epochs=3, lc_epochs=6, extra=extra + "pod_gp_blend\t0\n")
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 0
    bundle = load_state(out / "latent_conditioner.pt")
    assert "pod_gp_blend" not in bundle and "pod_gp_blend 0: the conditioners alone" in (out / "train_log.txt").read_text()
    assert bundle["ensemble_members"] == 2 and len(bundle["member_decoder_weights"]) == 1
    # two prediction paths, each with its own decoder
    assert not torch.equal(bundle["decoder_weights"]["readout.0.weight"],
                           bundle["member_decoder_weights"][0]["readout.0.weight"])
    label = "own decoder" if start == "fresh" else "fine-tuned decoder"
    assert re.search(f"{label}, mean of 2, (on the design prior, )?epoch ", (out / "report.txt").read_text())
    if start == "vae":  # both copies started at the VAE's decoder, which the VAE bundle keeps for reconstruction
        vae_decoder = load_state(out / "SimulGen-VAE")["model"]["decoder.readout.0.weight"]
        assert not torch.equal(bundle["member_decoder_weights"][0]["readout.0.weight"], vae_decoder)
    error, report, surrogate, designs = predicted_val_errors_and_report(tmp_path, out)
    assert report["conditioner"]["ensemble_members"] == 2
    # The saved ensemble predicts what the report measured ...
    assert error == pytest.approx(report["conditioner"]["prediction_relative_l2"]["conditioner"]["val"]["mean"],
                                  rel=1e-4)
    # ... which is the mean of its members' own predictions, each decoded by its own decoder.
    flat = surrogate.predict_latents(designs)
    first, second = flat.split(flat.shape[1] // 2, dim=1)
    with torch.no_grad():
        members = [decoder.eval().decode_flat(code, projected=True)
                   for decoder, code in zip(surrogate.prediction_decoder.decoders, (first, second))]
    assert not torch.allclose(members[0], members[1], atol=1e-4)
    torch.testing.assert_close(surrogate.decode_coefficients(flat), (members[0] + members[1]) / 2)


def test_the_pod_gp_blend_is_saved_predicted_by_predict_and_reported_beside_the_conditioners_alone(
        entry, tmp_path, monkeypatch, capsys):
    from modules.training import pod_gp_blend_fit
    monkeypatch.setattr(pod_gp_blend_fit, "BLEND_WEIGHTS", (0.5,))  # a blend whatever validation says
    args = write_config(tmp_path, epochs=3, lc_epochs=4, extra=ENSEMBLE.format(2))
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 0
    assert load_state(out / "latent_conditioner.pt")["pod_gp_blend"]["weight"] == 0.5
    error, report, surrogate, designs = predicted_val_errors_and_report(tmp_path, out)
    section = report["conditioner"]
    assert section["pod_gp_blend"] == {"weight_on_conditioners": 0.5, "gaussian_processes": 11,  # 12 training cases
                                       "processes_read": "the design"}
    # The saved surrogate predicts what the report measured as the tool's prediction ...
    assert error == pytest.approx(section["prediction_relative_l2"]["conditioner"]["val"]["mean"], rel=1e-4)
    # ... half the conditioners' field and half POD + GP's; the conditioners alone are reported beside it.
    alone = surrogate.without_blend()
    network = alone.predict(designs).fields
    truth = np.load(tmp_path / "data" / "dataset1.npy")[report["vae"]["val_case_indices"]]
    alone_error = np.mean(np.linalg.norm((network - truth).reshape(len(truth), -1), axis=1) /
                          np.linalg.norm(truth.reshape(len(truth), -1), axis=1))
    assert alone_error == pytest.approx(section["prediction_relative_l2"]["network"]["val"]["mean"], rel=1e-4)
    blend = surrogate.conditioner.blend
    inputs = surrogate.conditioner.model_inputs(designs)
    pod_gp = np.empty_like(network)
    alone.field_readout().write(blend.coefficients(blend.gp(inputs)), pod_gp)
    np.testing.assert_allclose(surrogate.predict(designs).fields, 0.5 * network + 0.5 * pod_gp, rtol=1e-4,
                               atol=1e-4 * np.abs(network).max())
    text = (out / "report.txt").read_text()
    assert "0.5 x conditioner + 0.5 x POD + GP (11 modes; the tool's prediction)" in text and ", alone " in text
    designs_file = tmp_path / "designs.csv"
    designs_file.write_text("\n".join((tmp_path / "data" / "params.csv").read_text().splitlines()[:3]) + "\n")
    capsys.readouterr()
    assert entry.main(["predict", "--model", str(out), "--params", str(designs_file), "--out", str(tmp_path / "p.npy"),
                       "--device", "cpu"]) == 0
    assert "the prediction is 0.5 x the conditioners' field + 0.5 x POD + Gaussian processes'" in capsys.readouterr().out


def test_an_amplitude_parameter_is_saved_applied_by_predict_and_reported(entry, tmp_path, monkeypatch, capsys):
    from modules.training import pod_gp_blend_fit
    monkeypatch.setattr(pod_gp_blend_fit, "BLEND_WEIGHTS", (0.5,))  # with a blend: the two wrappers together
    args = write_config(tmp_path, epochs=3, lc_epochs=4, extra=ENSEMBLE.format(1) + "amplitude_parameter\t4\n")
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 0
    assert "amplitude_parameter 4: fields predicted as parameter 4 x a unit field" in (out / "train_log.txt").read_text()
    error, report, surrogate, designs = predicted_val_errors_and_report(tmp_path, out)
    section = report["conditioner"]
    assert section["amplitude_parameter"] == 4
    assert error == pytest.approx(section["prediction_relative_l2"]["conditioner"]["val"]["mean"], rel=1e-4)
    assert "fields = parameter 4 x a unit field" in (out / "report.txt").read_text()
    # The code ends with r = the power over its training mean; the fields are r x the decoders' unit fields.
    amplitude = surrogate.conditioner.amplitude
    train = np.setdiff1d(np.arange(16), report["vae"]["val_case_indices"] + report["vae"].get("test_case_indices", []))
    power = np.loadtxt(tmp_path / "data" / "params.csv", delimiter=",", skiprows=1)[:, 3]
    flat = surrogate.predict_latents(designs)
    np.testing.assert_allclose(flat[:, -1].numpy(), designs[:, 3] / power[train].mean(), rtol=1e-5)
    with torch.no_grad():
        unit = surrogate.prediction_decoder.unit_decoder.decode_flat(flat[:, :-1], projected=True)
    torch.testing.assert_close(surrogate.decode_coefficients(flat), amplitude.from_unit(unit, flat[:, -1]))
    # The conditioners alone keep the scaling (the report measured them so).
    alone = surrogate.without_blend()
    assert alone.conditioner.amplitude is amplitude and alone.prediction_decoder.amplitude is amplitude
    truth = np.load(tmp_path / "data" / "dataset1.npy")[report["vae"]["val_case_indices"]]
    network = alone.predict(designs).fields
    alone_error = np.mean(np.linalg.norm((network - truth).reshape(len(truth), -1), axis=1) /
                          np.linalg.norm(truth.reshape(len(truth), -1), axis=1))
    assert alone_error == pytest.approx(section["prediction_relative_l2"]["network"]["val"]["mean"], rel=1e-4)
    designs_file = tmp_path / "designs.csv"
    designs_file.write_text("\n".join((tmp_path / "data" / "params.csv").read_text().splitlines()[:3]) + "\n")
    capsys.readouterr()
    assert entry.main(["predict", "--model", str(out), "--params", str(designs_file), "--out", str(tmp_path / "p.npy"),
                       "--device", "cpu", "--samples", "3"]) == 0
    assert f"the fields are predicted as {amplitude.describe()} (amplitude_parameter" in capsys.readouterr().out
    state = load_state(out / "latent_conditioner.pt")
    state["amplitude"]["column"] = 7
    with pytest.raises(CheckpointError, match="reads parameter 8 of 5; the file is damaged"):
        load_conditioner_bundle(save_state(tmp_path / "edited.pt", state), torch.device("cpu"))
    del state["amplitude"]["zero"]
    with pytest.raises(CheckpointError, match="the amplitude scaling in the bundle is damaged"):
        load_conditioner_bundle(save_state(tmp_path / "edited.pt", state), torch.device("cpu"))


def write_image_config(tmp_path: Path, extra: str = "") -> list:
    """A tiny run whose designs are the sweep's 16 x 16 images."""
    args = write_config(tmp_path, epochs=2, lc_epochs=4, extra="image_size\t16\n" + extra)
    condition = tmp_path / "condition.txt"
    condition.write_text(condition.read_text().replace("input_type\tcsvs", "input_type\timage").replace(
        f"param_dir\t{tmp_path / 'data'}/params.csv", f"param_dir\t{tmp_path / 'data'}/images"))
    return args


@pytest.mark.parametrize("gray_levels", [0, 4])
def test_image_designs_train_a_cnn_conditioner_and_predict_from_images(entry, tmp_path, gray_levels):
    args = write_image_config(tmp_path, f"image_gray_levels\t{gray_levels}\n")
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())["conditioner"]
    assert report["architecture"] == "cnn" and report["input_type"] == "image"
    network = load_conditioner_bundle(out / "latent_conditioner.pt", torch.device("cpu")).model
    if gray_levels:  # standardised by the training drawings before training, and saved so
        assert network.gray_geometry.levels == gray_levels and (network.gray_geometry.scale != 1).any()
    else:
        assert network.gray_geometry is None
    assert report["band"]["design_spread"] is False  # pixels: no design vector for the band's process
    assert "Prediction of designs from their images" in (out / "report.txt").read_text()
    # design_prior auto: off for design images (their PCA scores made the VAE stop early; README, ablations)
    vae = load_vae_bundle(out / "SimulGen-VAE", torch.device("cpu")).model
    assert vae.design_prior is None and report["on_design_prior"] is False
    new_designs = tmp_path / "new"
    new_designs.mkdir()
    for name in ("case_0010.png", "case_0002.png"):
        (new_designs / name).write_bytes((tmp_path / "data" / "images" / name).read_bytes())
    target = tmp_path / "pred.npy"
    assert entry.main(["predict", "--model", str(out), "--images", str(new_designs), "--out", str(target),
                       "--device", "cpu"]) == 0
    prediction = np.load(target)
    assert prediction.shape == (2, 8, 64) and np.isfinite(prediction).all()
    # natural order: case_0002 first; the same design predicts the same field as in a batch of one
    single = tmp_path / "single"
    single.mkdir()
    (single / "a.png").write_bytes((new_designs / "case_0002.png").read_bytes())
    assert entry.main(["predict", "--model", str(out), "--images", str(single), "--out", str(tmp_path / "one.npy"),
                       "--device", "cpu"]) == 0
    assert np.allclose(np.load(tmp_path / "one.npy")[0], prediction[0], atol=1e-5)


def test_with_design_images_the_blends_processes_read_the_conditioners_code_in_training_and_in_predict(
        entry, tmp_path, monkeypatch, capsys):
    from modules.data.design_images import load_images
    from modules.training import pod_gp_blend_fit
    monkeypatch.setattr(pod_gp_blend_fit, "BLEND_WEIGHTS", (0.5,))  # a blend whatever validation says
    args = write_image_config(tmp_path, ENSEMBLE.format(2))
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 0
    section = json.loads((out / "report.json").read_text())["conditioner"]
    assert section["pod_gp_blend"]["processes_read"] == "the conditioners' code"
    assert "GP on the conditioners' code; the tool's prediction" in (out / "report.txt").read_text()
    # reconstruction candidates: the decoders only; a drawing has no design vector to search (inverse design)
    log = (out / "train_log.txt").read_text()
    assert "reconstruction: through" in log and "by inverse design" not in log
    assert not {"training_designs", "reconstruction_by_design"} & set(load_state(out / "latent_conditioner.pt"))
    # nor can inverse design be asked of it: the error says why and what to do
    np.save(tmp_path / "fields.npy", np.load(tmp_path / "data" / "dataset1.npy")[:2])
    assert entry.main(["reconstruct", "--model", str(out), "--data", str(tmp_path / "fields.npy"), "--out",
                       str(tmp_path / "recon.npy"), "--designs", str(tmp_path / "designs.csv"), "--device", "cpu"]) == 1
    assert re.search(r"inverse design needs a conditioner trained on a parameter table.*--lc_only=1",
                     capsys.readouterr().err)
    assert not (tmp_path / "designs.csv").exists()
    surrogate = Surrogate.load(out / "SimulGen-VAE", torch.device("cpu"), out / "latent_conditioner.pt")
    images = load_images(tmp_path / "data" / "images", None, 16)[:5]
    alone = surrogate.without_blend()
    codes = alone.predict_latents(images)
    blend, width = surrogate.conditioner.blend, surrogate.vae.flat_latent_dim
    assert blend.reads_code == width and codes.shape[1] == width * surrogate.conditioner.members
    pod_gp = np.empty((5, surrogate.vae.num_timesteps, alone.field_readout().channels), np.float32)
    with torch.no_grad():
        alone.field_readout().write(blend.coefficients(blend.gp(codes.reshape(5, -1, width).mean(dim=1))), pod_gp)
    network = alone.predict(images).fields
    assert not np.allclose(network, pod_gp, atol=1e-3 * np.abs(network).max())
    np.testing.assert_allclose(surrogate.predict(images).fields, 0.5 * network + 0.5 * pod_gp, rtol=1e-4,
                               atol=1e-4 * np.abs(network).max())


def test_the_legacy_tools_own_image_files_run_end_to_end(entry, tmp_path, monkeypatch):
    """The legacy preset.txt and condition.txt as the old tool ships them (image designs, num_param 0, end to
    end), only the Dims edited to a tiny sweep; data and images where the legacy lookup finds them."""
    from modules.data.demo_sweep import DemoSweepSpec, ensure_demo_sweep

    preset, condition = legacy_copy(tmp_path)
    as_the_legacy_tool_ships_it(condition)
    for old, new in (("Dim1\t\t360", "Dim1\t\t16"), ("Dim2\t\t120", "Dim2\t\t8"), ("Dim3\t\t48210", "Dim3\t\t64"),
                     ("Dim2_red\t\t100", "Dim2_red\t\t8"), ("Dim3_end\t\t48000", "Dim3_end\t\t60")):
        edit(condition, old, new)
    demo = ensure_demo_sweep(tmp_path / "generated", DemoSweepSpec(num_cases=16, grid_size=8, num_timesteps=8))
    (tmp_path / "input_data").mkdir()
    demo["dataset"].rename(tmp_path / "input_data" / "dataset3.npy")  # data_No 3 in the legacy preset.txt
    demo["images_dir"].rename(tmp_path / "params")  # param_dir /params: a folder beside the run
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert entry.main(["--preset-file", str(preset), "--condition", str(condition), "--device", "cpu", "--quiet",
                       "--epochs", "1", "--lc-epochs", "1", "--plot=2", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())["conditioner"]
    assert report["input_type"] == "image" and report["end_to_end"] and report["architecture"] == "cnn"


def test_every_variable_is_trained_and_given_back_in_its_own_axis(entry, tmp_path):
    """num_var 2: both variables are trained (each node's variables are channels of their own) and users get
    [..., nodes, variables] back from reconstruct and predict, one VTU array per variable."""
    from modules.data.demo_sweep import DemoSweepSpec, ensure_demo_sweep
    import meshio

    demo = ensure_demo_sweep(tmp_path / "data", DemoSweepSpec(num_cases=16, grid_size=8, num_timesteps=8))
    temperature = np.load(demo["dataset"])
    # a second variable in other units, with other dynamics: the temperatures played backwards in time
    stored = np.stack([temperature, 100.0 + 3.0 * temperature[:, ::-1]], axis=-1).astype(np.float32)
    np.save(tmp_path / "data" / "two.npy", stored)
    args = write_config(tmp_path, epochs=40, data_file="two.npy", demo=0, extra="plot_variable\t1\n")
    condition = tmp_path / "condition.txt"
    condition.write_text(condition.read_text().replace("num_var\t1", "num_var\t2"))
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out), "--plot=1"]) == 0
    assert "trains all 2 variables; their shares of the error in physical units" in (out / "train_log.txt").read_text()
    assert (out / "plots" / "vae_median_case.png").is_file()

    target = tmp_path / "recon.npy"
    assert entry.main(["reconstruct", "--model", str(out), "--data", str(tmp_path / "data" / "two.npy"),
                       "--out", str(target), "--device", "cpu"]) == 0
    recon = np.load(target)
    assert recon.shape == stored.shape
    for variable in range(2):
        truth = stored[..., variable].reshape(16, -1)
        error = np.linalg.norm(recon[..., variable].reshape(16, -1) - truth, axis=1) / np.linalg.norm(truth, axis=1)
        assert error.mean() < 0.2, (variable, error)

    designs = tmp_path / "designs.csv"
    designs.write_text("\n".join((tmp_path / "data" / "params.csv").read_text().splitlines()[:3]) + "\n")
    assert entry.main(["predict", "--model", str(out), "--params", str(designs), "--out", str(tmp_path / "p.npy"),
                       "--vtu", str(tmp_path / "vtu"), "--device", "cpu"]) == 0
    assert np.load(tmp_path / "p.npy").shape == (2, 8, 64, 2)
    point_data = meshio.read(tmp_path / "vtu" / "design_0002_t0007.vtu").point_data
    assert set(point_data) == {"prediction_variable0", "prediction_variable1"}


def test_spread_timesteps_are_saved_with_the_model_and_reported_by_every_output(entry, tmp_path, capsys):
    args = write_config(tmp_path, epochs=1, lc_epochs=1, extra="Dim2_red\t4\nDim2_red_mode\tspread\n")
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 0
    kept = [0, 2, 5, 7]  # 4 of the 8 stored steps, the first and the last among them
    assert json.loads((out / "report.json").read_text())["time_indices"] == kept
    assert load_state(out / "SimulGen-VAE")["time_indices"].tolist() == kept
    capsys.readouterr()

    target = tmp_path / "recon.npy"
    stored = np.load(tmp_path / "data" / "dataset1.npy")
    assert entry.main(["reconstruct", "--model", str(out), "--data", str(tmp_path / "data" / "dataset1.npy"),
                       "--out", str(target), "--device", "cpu"]) == 0
    recon = np.load(target)
    assert recon.shape == (16, 4, 64)
    assert "timesteps stand for stored timesteps 0, 2, 5, 7 (0-based) of the sweep's 8" in capsys.readouterr().out
    # reconstruct reads exactly the kept stored steps: changing every other step changes nothing
    changed = stored.copy()
    changed[:, [1, 3, 4, 6]] += 1000.0
    np.save(tmp_path / "changed.npy", changed)
    assert entry.main(["reconstruct", "--model", str(out), "--data", str(tmp_path / "changed.npy"),
                       "--out", str(tmp_path / "recon_changed.npy"), "--device", "cpu"]) == 0
    assert np.array_equal(np.load(tmp_path / "recon_changed.npy"), recon)
    changed[:, 2] += 1000.0  # ... while a kept one is read
    np.save(tmp_path / "changed.npy", changed)
    assert entry.main(["reconstruct", "--model", str(out), "--data", str(tmp_path / "changed.npy"),
                       "--out", str(tmp_path / "recon_kept_changed.npy"), "--device", "cpu"]) == 0
    assert not np.array_equal(np.load(tmp_path / "recon_kept_changed.npy"), recon)

    designs = tmp_path / "designs.csv"
    designs.write_text("\n".join((tmp_path / "data" / "params.csv").read_text().splitlines()[:3]) + "\n")
    assert entry.main(["predict", "--model", str(out), "--params", str(designs), "--out", str(tmp_path / "p.npy"),
                       "--vtu", str(tmp_path / "vtu"), "--device", "cpu"]) == 0
    assert np.load(tmp_path / "p.npy").shape == (2, 4, 64)
    series = (tmp_path / "vtu" / "design_0001.pvd").read_text()
    assert [f'timestep="{step}"' in series for step in kept] == [True] * 4 and 'timestep="1"' not in series


@pytest.mark.parametrize("setting", ["1", "0"])
def test_case_pca_path_is_built_saved_and_used_by_reconstruct_and_predict_or_left_out(entry, tmp_path, setting):
    extra = (f"case_pca_path\t{setting}\nuse_e2e_training\t1\nuse_latent_regularization\t0\ne2e_finetune_decoder\t1\n"
             "e2e_decoder_start\tfresh\nconditioner_ensemble\t2\n")
    args = write_config(tmp_path, epochs=3, lc_epochs=2, extra=extra)
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 0
    bundle = load_state(out / "SimulGen-VAE")
    members = load_state(out / "latent_conditioner.pt")
    log = (out / "train_log.txt").read_text()
    if setting == "0":
        assert not bundle["case_pca"] and not any("case_" in name for name in bundle["model"])
        assert "VAE: no PCA start (case_pca_path 0)" in log
        return
    assert bundle["case_pca"] and "case_projection.weight" in bundle["model"]
    assert "VAE: starts at PCA of the training cases with" in log and "(case_pca_path 1)" in log
    # Each prediction decoder keeps (and trains) its own copy of the linear readout.
    assert "case_readout.weight" in members["decoder_weights"]
    # reconstruct and predict through the saved bundles, and the report measured that same reconstruction
    target = tmp_path / "recon.npy"
    assert entry.main(["reconstruct", "--model", str(out), "--data", str(tmp_path / "data" / "dataset1.npy"),
                       "--out", str(target), "--device", "cpu"]) == 0
    recon, truth = np.load(target), np.load(tmp_path / "data" / "dataset1.npy")
    val = json.loads((out / "report.json").read_text())["vae"]["val_case_indices"]
    pooled = np.linalg.norm(recon[val] - truth[val]) / np.linalg.norm(truth[val])
    reported = json.loads((out / "report.json").read_text())["vae"]["relative_l2"]["vae"]["val"]["pooled"]
    assert pooled == pytest.approx(reported, rel=1e-4)
    designs = tmp_path / "designs.csv"
    designs.write_text("\n".join((tmp_path / "data" / "params.csv").read_text().splitlines()[:4]) + "\n")
    assert entry.main(["predict", "--model", str(out), "--params", str(designs), "--out", str(tmp_path / "p.npy"),
                       "--device", "cpu"]) == 0
    assert np.load(tmp_path / "p.npy").shape == (3,) + truth.shape[1:]


def test_a_spent_time_budget_cuts_every_stage_and_the_report_says_so(entry, tmp_path):
    """training_minutes so small that no stage affords an epoch: each plans after its 3 timed epochs and stops
    there (the least it keeps of 8 is 1); the first member gets the budget's rest, which is nothing, likewise,
    and the second is not trained at all (nothing left affords 80 % of its epochs)."""
    args = write_config(tmp_path, epochs=8, lc_epochs=8, extra="training_minutes\t0.0001\n" + ENSEMBLE.format(2))
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    for section in ("vae", "conditioner"):
        training = report[section]["training"]
        assert (training["epochs_run"], training["epochs_planned"], training["epochs_configured"]) == (3, 3, 8)
    assert (report["conditioner"]["ensemble_trained"], report["conditioner"]["ensemble_configured"]) == (1, 2)
    text = (out / "report.txt").read_text()
    assert "the time budget kept 3 of 8 epochs" in text and "1 of 2 members trained: the time budget" in text
    log = (out / "train_log.txt").read_text()
    assert "training time budget: 0.0001 min for the VAE and the conditioners" in log
    for stage in ("vae", "conditioner"):
        assert f"{stage}: the training time budget (training_minutes) leaves this stage 0:00" in log, stage
        assert load_state(out / "checkpoints" / f"{stage}_last.pt")["epochs"] == 3
    assert "conditioner: member 2 and later not trained: the training time budget (training_minutes) leaves 0 s" in log
    assert not (out / "checkpoints" / "conditioner_member2_last.pt").exists()
    # The saved surrogate is the one member trained: predict works and holds no untrained decoder.
    bundle = load_state(out / "latent_conditioner.pt")
    assert not any(key.startswith("member_decoder") for key in bundle), sorted(bundle)
