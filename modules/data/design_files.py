"""Finding a sweep's design files: one file per case in a folder, matched to cases in natural sort order
(`case_2` before `case_10`), and the error every problem with a user's design file raises."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Sequence, Tuple

from modules.errors import DataError

_DIGITS = re.compile(r"([0-9]+)")


def natural_sort_key(name: str) -> Tuple:
    """Sort key that orders digit runs by value: 'case_2' < 'case_10'.

    Splitting on digit runs always puts text at even positions and numbers at
    odd ones, so two keys never compare a str with an int. The original name
    breaks ties ('case_02' vs 'case_2') so the order is deterministic.
    """
    parts = _DIGITS.split(name)
    key = tuple(int(part) if index % 2 else part.casefold() for index, part in enumerate(parts))
    return (key, name)


def design_error(message: str, fix: str) -> DataError:
    return DataError(f"{message}\n    fix: {fix}")


def files_in(folder: Path, extensions: Sequence[str]) -> List[Path]:
    """Files of `folder` with one of `extensions` (case-insensitive), in natural order.

    Hidden files are skipped because macOS writes '._case_1.csv' companions
    next to real files on shared drives.
    """
    wanted = {extension.lower() for extension in extensions}
    files = [entry for entry in folder.iterdir()
             if entry.is_file() and not entry.name.startswith(".") and entry.suffix.lower() in wanted]
    return sorted(files, key=lambda entry: natural_sort_key(entry.name))
