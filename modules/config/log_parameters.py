"""The `log_parameters` setting in condition.txt: auto, none, or the 1-based parameter columns read as logarithms
(data/log_spacing.py decides auto on the training designs)."""
from __future__ import annotations

from typing import List

LOG_PARAMETERS_WORDS = ("auto", "none")


def setting_problem(setting: str, num_params: int) -> str:
    """What is wrong with a `log_parameters` value ('' when nothing)."""
    if setting in LOG_PARAMETERS_WORDS:
        return ""
    parts = [part.strip() for part in setting.split(",")]
    if not all(part.isdigit() and 1 <= int(part) <= max(num_params, 1) for part in parts):
        return f"must be auto, none or parameter column numbers 1-{max(num_params, 1)} separated by commas"
    return ""


def listed_columns(setting: str) -> List[int]:
    """The 0-based columns an explicit list names ('1,5' -> [0, 4]); [] for auto and none."""
    if setting in LOG_PARAMETERS_WORDS:
        return []
    return sorted({int(part.strip()) - 1 for part in setting.split(",")})
