"""The accuracy report: the text table of per-case error summaries, and report.json/report.txt on disk."""
from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from modules.storage.atomic_files import replace_atomically
from modules.errors import SimulGenError


# How the report names the decoder that turned predicted codes into fields (none for the VAE's own, frozen).
PREDICTION_DECODER_NOTES = {"fresh": "own decoder", "fine-tuned": "fine-tuned decoder"}


def ensemble_note(kept: int, trained: int, configured: int) -> list:
    """['mean of 3'], ['mean of 2 of 3 trained'], ['best of 3 trained'], or nothing without an ensemble; with
    ['1 of 2 members trained: the time budget'] where training_minutes left no time for the others."""
    skipped = [f"{trained} of {configured} members trained: the time budget"] if trained < configured else []
    if trained <= 1:
        return skipped
    if kept == 1:
        return [f"best of {trained} trained"] + skipped
    return [f"mean of {kept}" + (f" of {trained} trained" if kept < trained else "")] + skipped


def _percent(value: float) -> str:
    return f"{100.0 * float(value):.2f} %"


def format_report_table(rows: Sequence[Tuple[str, str, Dict[str, Any]]]) -> str:
    """A fixed-width text table: model, split, pooled, mean, median, max (errors shown as percent, 2 decimals).

    Each row is (model name, split name, summary from `summarize_errors`); the
    summary holds fractions (0.0321) which are printed as percent ('3.21 %').
    """
    header = ("model", "split", "pooled", "mean", "median", "max")
    body: List[Tuple[str, ...]] = [
        (str(name), str(split), _percent(summary["pooled"]) if "pooled" in summary else "-",
         _percent(summary["mean"]), _percent(summary["median"]), _percent(summary["max"]))
        for name, split, summary in rows
    ]
    widths = [max(len(row[column]) for row in [header] + body) for column in range(len(header))]
    # Text columns read best left-aligned, numbers right-aligned so the decimal points line up.
    def render(row: Tuple[str, ...]) -> str:
        cells = [row[i].ljust(widths[i]) if i < 2 else row[i].rjust(widths[i]) for i in range(len(row))]
        return "  ".join(cells).rstrip()

    lines = [render(header), "  ".join("-" * width for width in widths)]
    lines.extend(render(row) for row in body)
    return "\n".join(lines) + "\n"


def format_run_report(report: Dict[str, Any]) -> str:
    """report.txt: the reconstruction table, then the prediction table when a conditioner was measured.

    'pooled' is ||X - X_hat||_F / ||X||_F over the split's cases; mean, median and max are of the per-case
    errors. 'val' picked the kept epochs; 'test' (when the run has one) was used for nothing but this report."""
    vae = report["vae"]
    rows = []
    kept = _kept(vae.get("training"))
    decoder = vae.get("reconstruction_decoder", "vae")  # Surrogate.reconstruction_decoder
    through = "" if decoder == "vae" else f"; decoded by {decoder}'s prediction decoder, picked on validation"
    model = f"VAE ({vae['latent_numbers']} latent numbers{kept}{through})"
    if decoder == "design":
        model = (f"inverse design ({vae.get('reconstruction_numbers', '?')} design numbers: the prediction of the "
                 f"design that matches the field best; picked on validation over the VAE, {vae['latent_numbers']} "
                 f"latent numbers{kept})")
    for model_name, label in (("vae", model),
                              ("pca", f"PCA ({vae['pca_components']} components)")):
        for split, summary in vae["relative_l2"][model_name].items():
            rows.append((label, split, summary))
    text = ("Reconstruction of known cases: relative L2 error ||x - x_hat|| / ||x||, physical units\n"
            + format_report_table(rows))
    measured = vae["relative_l2"]["vae"].get("train", {}).get("count", 0)
    if 0 < measured < vae.get("train_cases", measured):
        text += (f"train: {measured} evenly spread training cases of {vae['train_cases']} (the fit, measured on at "
                 f"most {measured} to bound the report's time; validation and test cases are measured whole)\n")
    if "conditioner" in report:
        lc = report["conditioner"]
        errors = lc["prediction_relative_l2"]
        lc_kept = _kept(lc.get("training"))
        decoder = lc.get("prediction_decoder", "vae")
        notes = ((["end-to-end"] if lc["end_to_end"] else [])
                 + ([PREDICTION_DECODER_NOTES[decoder]] if decoder in PREDICTION_DECODER_NOTES else [])
                 + ensemble_note(lc.get("ensemble_members", 1), lc.get("ensemble_trained", 1),
                                  lc.get("ensemble_configured", lc.get("ensemble_trained", 1)))
                 + (["on the design prior"] if lc.get("on_design_prior") and decoder != "fresh" else [])
                 + ([lc_kept[2:]] if lc_kept else [])
                 + ([f"fields = parameter {lc['amplitude_parameter']} x a unit field"
                     + (f" about {lc['amplitude_reference']:.6g}" if lc.get("amplitude_reference") else "")]
                    if lc.get("amplitude_parameter") else []))
        name = f"{lc['architecture'].upper()} conditioner + decoder" + (f" ({', '.join(notes)})" if notes else "")
        blend = lc.get("pod_gp_blend")
        if blend:
            weight = blend["weight_on_conditioners"]
            on_code = "; GP on the conditioners' code" if blend.get("processes_read") == "the conditioners' code" else ""
            rows = [(f"{weight:.1f} x conditioner + {1 - weight:.1f} x POD + GP ({blend['gaussian_processes']} "
                     f"modes{on_code}; the tool's prediction)", split, summary)
                    for split, summary in errors["conditioner"].items()]
            rows += [(name + ", alone", split, summary) for split, summary in errors["network"].items()]
        else:
            rows = [(name, split, summary) for split, summary in errors["conditioner"].items()]
        for key, label in (("pod_gp", f"POD ({lc['pod_gp_modes']} modes) + Gaussian process"),
                           ("nearest_neighbour", "nearest training design")):
            rows += [(label, split, summary) for split, summary in errors[key].items()]
        text += ("\nPrediction of designs from their " + ("parameters" if lc["input_type"] == "csv" else "images")
                 + ": relative L2 error, physical units\n" + format_report_table(rows))
        band = lc.get("band")
        if band:
            coverage = ", ".join(f"{split} {share:.1%}" for split, share in band["coverage"].items())
            widened = (" x the design's width (a Gaussian process's posterior std)"
                       if band.get("design_spread") else "")
            text += (f"\npredict --samples band: prediction +- {band['scale']:.3g} x sampled std{widened}, calibrated "
                     f"to {band['nominal']:.0%} on {band['calibrated_on']}; measured coverage: {coverage}\n")
    return text


def _kept(training: Optional[Dict[str, Any]]) -> str:
    """', epoch 396 of 500' (the kept epoch, 1-based; 0 = the untrained start), '' for a loaded model; with
    ' (the time budget kept 214 of 500 epochs)' where training_minutes cut the stage's epochs, and
    ' (stopped early: no better in its last 100 epochs)' where early_stopping_patience ended it."""
    if not training:
        return ""
    configured = training.get("epochs_configured", 0)
    planned = training.get("epochs_planned", configured)
    budget = f" (the time budget kept {planned} of {configured} epochs)" if planned < configured else ""
    if training.get("stopped_early"):
        budget += f" (stopped early: no better in its last {training['epochs_run'] - training['best_epoch']} epochs)"
    if training["best_epoch"] == 0:
        return ", untrained start kept" + budget
    return f", epoch {training['best_epoch']} of {training['epochs_run']}" + budget


def _json_default(value: Any) -> Any:
    """Let numpy scalars/arrays and paths into the JSON report; anything else is a programming error."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable")


def _describe_os_error(error: OSError) -> str:
    reasons = {
        errno.ENOSPC: "disk full (no space left on device)",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "read-only file system",
    }
    return reasons.get(error.errno, error.strerror or str(error))


def _write_atomically(path: Path, text: str) -> None:
    """The report file via a temp file and a rename: readers see the previous report or the new one."""
    try:
        replace_atomically(Path(path), lambda handle: handle.write(text), "w")
    except OSError as error:
        raise SimulGenError(
            f"could not write report file {path}: {_describe_os_error(error)}; the previous file, if any, "
            "is unchanged. fix: free space on that disk or choose a writable output_dir, then rerun") from error


def write_report(path_json: Path, path_text: Path, report: Dict[str, Any], table: str) -> None:
    """Write the report as JSON (indent 2) and the table as text, each atomically.

    Both are serialised before anything touches the disk, so a report that cannot
    be represented (NaN, unknown types) writes nothing. Raises SimulGenError naming
    the file and the reason if the disk refuses (e.g. disk full).
    """
    try:
        json_text = json.dumps(report, indent=2, allow_nan=False, default=_json_default) + "\n"
    except (TypeError, ValueError) as error:
        raise SimulGenError(f"could not write report file {path_json}: the report is not valid JSON ({error}); "
                            "expected plain numbers, strings, lists and dicts without NaN or infinity") from error
    text = table if table.endswith("\n") else table + "\n"
    _write_atomically(Path(path_json), json_text)
    _write_atomically(Path(path_text), text)
