"""Which cases train, which pick the kept epochs (validation) and which only the report measures (test).

Seeded by default (split_seed; test first, then validation, from one permutation, so a run without a test
split keeps the split earlier versions made), or fixed by a JSON split file, e.g. a sweep's own split.json.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modules.config.schema import DataConfig
from modules.errors import DataError


@dataclass(frozen=True)
class CaseSplit:
    """Sorted, disjoint case indices."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def split_cases(data: DataConfig, base_dir: Path) -> CaseSplit:
    """The run's split: from data.split_file when set, else seeded by data.split_seed."""
    if data.split_file is not None:
        return _split_from_file(base_dir / data.split_file, data)
    order = np.random.default_rng(data.split_seed).permutation(data.num_cases)
    num_test, num_val = data.num_test_cases, data.num_validation_cases
    return CaseSplit(train=np.sort(order[num_test + num_val:]), validation=np.sort(order[num_test:num_test + num_val]),
                     test=np.sort(order[:num_test]))


def _split_from_file(path: Path, data: DataConfig) -> CaseSplit:
    fix = (f"    fix: write split_file as JSON {{\"train\": [...], \"test\": [...]}} (optionally \"validation\": [...]) "
           f"of distinct 0-based case indices below Dim1 ({data.num_cases})")
    try:
        listed = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} (split_file): not found\n    fix: correct split_file in condition.txt") from None
    except (OSError, ValueError) as error:
        raise DataError(f"{path} (split_file): not readable JSON ({error})\n{fix}") from None
    if not isinstance(listed, dict) or "train" not in listed:
        raise DataError(f"{path} (split_file): expected an object with a \"train\" list\n{fix}")
    parts = {}
    for name in ("train", "validation", "test"):
        values = listed.get(name, [])
        if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise DataError(f"{path} (split_file): \"{name}\" must be a list of whole numbers\n{fix}")
        bad = [v for v in values if not 0 <= v < data.num_cases]
        if bad:
            raise DataError(f"{path} (split_file): \"{name}\" holds {bad[:5]}, outside 0..{data.num_cases - 1}\n{fix}")
        parts[name] = np.asarray(sorted(set(values)), dtype=np.int64)
    if "validation" not in listed:
        rng = np.random.default_rng(data.split_seed)
        count = min(max(1, round(len(parts["train"]) * data.validation_fraction)), len(parts["train"]) - 1)
        chosen = rng.permutation(parts["train"])[:count]
        parts["validation"] = np.sort(chosen)
        parts["train"] = np.setdiff1d(parts["train"], chosen)
    names = list(parts)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            shared = np.intersect1d(parts[first], parts[second])
            if len(shared):
                raise DataError(f"{path} (split_file): cases {shared[:5].tolist()} are in both \"{first}\" and "
                                f"\"{second}\"\n{fix}")
    if len(parts["train"]) == 0 or len(parts["validation"]) == 0:
        raise DataError(f"{path} (split_file): needs at least one training and one validation case\n{fix}")
    return CaseSplit(parts["train"], parts["validation"], parts["test"])
