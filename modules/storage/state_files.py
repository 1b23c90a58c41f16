"""Saving and loading state dicts safely.

Writes go to a temporary file in the same folder, are flushed to disk and then
renamed over the target, so a crash or a full disk never leaves a half-written
checkpoint in place of a good one. Loads use `torch.load(weights_only=True)`,
which refuses any pickled object that is not plain tensors and containers.
"""
from __future__ import annotations

import errno
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

from modules.storage.atomic_files import replace_atomically
from modules.errors import CheckpointError, SimulGenError


def write_atomically(path: Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """replace_atomically, with a user-facing error when the disk refuses (the previous file stays)."""
    try:
        return replace_atomically(path, write, mode)
    except OSError as error:
        reason = "the disk is full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        raise SimulGenError(f"could not write {path}: {reason}. The previous version of the file, if any, "
                            f"is unchanged; free space or choose another --out folder and run again") from error


def save_state(path: Path, state: Dict[str, Any]) -> Path:
    """torch.save a dict of state dicts / tensors / plain values atomically."""
    return write_atomically(path, lambda stream: torch.save(state, stream))


def load_state(path: Path, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a file written by save_state; never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; train a model first or check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused to load: it holds Python objects other than tensors and plain values, "
            f"which could run code on this machine (loaded with weights_only=True). Only load files "
            f"written by SimulGenVAE. Detail: {str(error).splitlines()[0]}") from None
    except Exception as error:  # torch.load raises many types on garbage input (KeyError, EOFError, ...)
        raise CheckpointError(
            f"{path}: not a readable SimulGenVAE checkpoint (truncated or not a checkpoint: "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}); "
            f"use the other checkpoint in the same folder or train again") from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path}: not a SimulGenVAE checkpoint (no 'format' entry); "
                              f"check that the path points at a file written by this tool")
    return state


def differing_keys(saved: Dict[str, Any], current: Dict[str, Any], prefix: str = "") -> List[str]:
    """Dotted keys whose values differ between two nested dicts."""
    out: List[str] = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += differing_keys(a, b, name + ".")
        elif _normalise(a) != _normalise(b):
            out.append(f"{name}: saved {a!r}, now {b!r}")
    return out


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def require_matching(path: Path, saved: Dict[str, Any], current: Dict[str, Any], what: str) -> None:
    """Refuse a checkpoint whose architecture settings differ from the current run's."""
    differences = differing_keys(saved, current)
    if differences:
        listed = "\n  - ".join(differences)
        raise CheckpointError(
            f"{path}: this {what} was trained with different settings:\n  - {listed}\n"
            f"Restore those settings in preset.txt/condition.txt, or train a new model with --out NEW_FOLDER.")


def load_weights(module: torch.nn.Module, weights: Dict[str, Any], path: Path) -> None:
    """load_state_dict, with a readable error when the file was written by a different network."""
    try:
        module.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise CheckpointError(f"{path}: its weights do not fit this network ({first[:300]}); it was written by a "
                              f"different configuration or version. Train again with --out NEW_FOLDER") from None
