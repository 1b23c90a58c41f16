"""The legacy preset.txt / condition.txt pair users keep (a copy of ../shared/fixtures/legacy, kept in the repo so
CI never skips), copied into a test's folder and edited the way a user would edit it."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Tuple

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"


def legacy_copy(folder: Path) -> Tuple[Path, Path]:
    """The legacy fixture pair, copied into `folder` so a test can edit it: (preset.txt, condition.txt)."""
    preset, condition = folder / "preset.txt", folder / "condition.txt"
    shutil.copy(LEGACY / "preset.txt", preset)
    shutil.copy(LEGACY / "condition.txt", condition)
    return preset, condition


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"fixture no longer contains {old!r}"
    path.write_text(text.replace(old, new, 1))


def as_the_legacy_tool_ships_it(condition: Path) -> None:
    """The conditioner lines of the legacy tool's own condition.txt: image designs, num_param 0, end to end."""
    edit(condition, "num_param\t5", "num_param\t0")
    edit(condition, "input_type\tcsvs", "input_type\timage")
    edit(condition, "param_data_type .csv", "param_data_type .png")
    edit(condition, "use_spatial_attention\t0", "use_spatial_attention\t1")
    edit(condition, "use_e2e_training\t0", "use_e2e_training\t1")
