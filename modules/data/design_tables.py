"""Design parameters from CSV, read with pandas: one file with a row per case, or a folder of per-case files.

A header row is optional. Every problem names the file, the line and the column (with its header name)
of the first bad cell, what was expected and the fix.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import List, Optional, Sequence, TextIO

import numpy as np
import pandas as pd

from modules.data.design_files import design_error, files_in


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_cells(path: Path) -> pd.DataFrame:
    """The file's non-blank rows as stripped text cells (as many columns as the widest row), indexed by line number.

    Every cell is read as text (dtype=str, nothing turned into NaN), so an empty or misspelt value is
    found and named here rather than silently read as missing."""
    try:
        # utf-8-sig drops the byte-order mark Excel writes at the start of CSV exports.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise design_error(f"{path}: is not a UTF-8 text file ({exc.reason} at byte {exc.start}); "
                           "expected a CSV of numbers",
                           "save it as 'CSV UTF-8 (comma delimited)' or plain CSV") from exc
    lines = text.splitlines()
    if not any(line.strip(" ,\t") for line in lines):
        return pd.DataFrame()
    widest = max(line.count(",") + 1 for line in lines)  # an upper bound: a quoted comma counts twice
    try:
        cells = pd.read_csv(io.StringIO(text), header=None, names=range(widest), dtype=str, keep_default_na=False,
                            skip_blank_lines=False)
    except pd.errors.ParserError as exc:
        raise design_error(f"{path}: cannot be parsed as CSV ({str(exc).strip()})",
                           "save it as plain CSV: comma-separated numbers, one row per line") from exc
    # Fields missing from a short row are NaN in some pandas versions, '' in others: '' for all.
    cells = cells.fillna("").apply(lambda column: column.str.strip())
    cells.index = cells.index + 1  # line numbers
    return cells[(cells != "").any(axis=1)]


def row_widths(cells: pd.DataFrame) -> pd.Series:
    """Cells up to the last non-empty one, per row."""
    filled = (cells != "").to_numpy()
    return pd.Series(filled.shape[1] - np.argmax(filled[:, ::-1], axis=1), index=cells.index)


def split_header(cells: pd.DataFrame) -> Optional[List[str]]:
    """The header row's names when the first row is one, else None.

    The first row is a header when one of its cells is text and the second row is all numbers. A first row
    that is text in every cell is a header too, so a typo in the first data row is reported there and not
    on the header line."""
    if cells.empty:
        return None
    widths = row_widths(cells)
    first = [cell for cell in cells.iloc[0, :widths.iloc[0]] if cell]
    has_text = any(not _is_number(cell) for cell in first)
    all_text = bool(first) and not any(_is_number(cell) for cell in first)
    second_numeric = len(cells) > 1 and all(cell and _is_number(cell) for cell in cells.iloc[1, :widths.iloc[1]])
    return list(cells.iloc[0]) if has_text and (second_numeric or all_text) else None


def _column_label(index: int, header: Optional[List[str]]) -> str:
    label = f"column {index + 1}"
    if header is not None and index < len(header) and header[index]:
        label += f" ('{header[index]}')"
    return label


def to_numbers(path: Path, cells: pd.DataFrame, header: Optional[List[str]]) -> np.ndarray:
    """The cells as float64, or a DataError at the first one (row by row) that is empty, not a number or not
    finite."""
    values = cells.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    row, column = np.argwhere(bad)[0]
    text = cells.iat[row, column]
    where = f"{path} line {cells.index[row]}, {_column_label(int(column), header)}"
    if not text:
        raise design_error(f"{where}: the cell is empty; expected a number", "fill in the design value for this case")
    if _is_number(text) and not math.isfinite(float(text)):
        raise design_error(f"{where}: '{text}' is not a finite number (NaN or infinity)",
                           "replace it with the actual design value for this case")
    raise design_error(f"{where}: '{text}' is not a number",
                       "write plain numbers such as 0.25 or 1e-3, with '.' as the decimal point "
                       "and ',' between values")


def _check_widths(path: Path, cells: pd.DataFrame, num_params: int) -> None:
    widths = row_widths(cells)
    wrong = widths[widths != num_params]
    if len(wrong):
        line, found = wrong.index[0], int(wrong.iloc[0])
        raise design_error(f"{path} line {line}: found {found} columns, expected {num_params} "
                           "(num_param in condition.txt)",
                           f"give every row exactly {num_params} values, or set num_param to {found} "
                           "if the file is right")


def read_table_file(path: Path, num_params: int) -> np.ndarray:
    """One CSV, one row per case -> float64 [rows, num_params]."""
    cells = read_cells(path)
    if cells.empty:
        raise design_error(f"{path}: the file is empty; expected one row of {num_params} numbers per case",
                           "export the design parameters into it, one row per simulated case")
    header = split_header(cells)
    data = cells.iloc[1:] if header is not None else cells
    if data.empty:
        raise design_error(f"{path}: has a header line but no data rows; expected one row of "
                           f"{num_params} numbers per case",
                           "export the design parameters below the header, one row per simulated case")
    _check_widths(path, data, num_params)
    return to_numbers(path, data.iloc[:, :num_params], header)


def read_case_file(path: Path, num_params: int) -> np.ndarray:
    """One per-case CSV holding num_params numbers as one row or one column -> float64 [num_params]."""
    cells = read_cells(path)
    if cells.empty:
        raise design_error(f"{path}: the file is empty; expected {num_params} numbers for this case "
                           "(num_param in condition.txt)",
                           "export this case's design parameters into it, as one row or one column")
    header = split_header(cells)
    data = cells.iloc[1:] if header is not None else cells
    if data.empty:
        raise design_error(f"{path}: has a header line but no numbers; expected {num_params} numbers for this case",
                           "add this case's design parameters below the header")
    widths = row_widths(data)
    if len(data) == 1:
        _check_widths(path, data, num_params)
        return to_numbers(path, data.iloc[:, :num_params], header)[0]
    if (widths == 1).all():
        if len(data) != num_params:
            raise design_error(f"{path}: found {len(data)} numbers in one column, expected {num_params} "
                               "(num_param in condition.txt)",
                               f"list exactly {num_params} values for this case, or set num_param to "
                               f"{len(data)} if the file is right")
        return to_numbers(path, data.iloc[:, :1], header)[:, 0]
    raise design_error(f"{path}: found {len(data)} rows of {', '.join(map(str, sorted(set(widths))))} columns; "
                       f"expected {num_params} numbers (num_param in condition.txt) as one row or one column",
                       "write this case's parameters on a single line, or one value per line")


def table_parameter_names(path: Path, num_params: int) -> Optional[List[str]]:
    """The names a parameter table's header row gives its first num_params columns (an empty name becomes
    parameter_k); None for a table without a header and for a folder of per-case files."""
    path = Path(path)
    if not path.is_file():
        return None
    header = split_header(read_cells(path))
    if header is None:
        return None
    names = [name or f"parameter_{column + 1}" for column, name in enumerate(header[:num_params])]
    names += [f"parameter_{column + 1}" for column in range(len(names), num_params)]
    # Written back as a header (reconstruct --designs), a row of numbers-only names would read as a design.
    return names if any(not _is_number(name) for name in names) else None


def data_line_numbers(path: Path) -> List[int]:
    """The line in the file of each data row of a one-CSV parameter table (blank lines and the header counted), for
    error messages about a design read from it."""
    cells = read_cells(Path(path))
    data = cells.iloc[1:] if split_header(cells) is not None else cells
    return [int(line) for line in data.index]


def write_parameter_table(stream: TextIO, names: Sequence[str], table: np.ndarray) -> None:
    """A header row (csv-quoted: a name may hold a comma), then one row of numbers per design: a table
    load_parameter_table and table_parameter_names read back."""
    csv.writer(stream, lineterminator="\n").writerow(names)
    np.savetxt(stream, table, fmt="%.8g", delimiter=",")


def _check_case_count(where: str, found: int, num_cases: Optional[int], unit: str) -> None:
    if num_cases is not None and found != num_cases:
        raise design_error(f"{where}: found {found} {unit}, expected {num_cases} "
                           f"(Dim1 in condition.txt: one per simulated case)",
                           "give exactly one per case of the dataset, in case order, or correct Dim1")


def load_parameter_table(path: Path, num_params: int, num_cases: Optional[int] = None) -> np.ndarray:
    """Design parameters -> float64 [num_cases, num_params].

    `path` is one CSV with a row per case (header row optional), or a folder of
    per-case CSV files matched to cases in natural sort order. `num_cases`, when
    given, must equal the number of rows or files.
    """
    path = Path(path)
    if not path.exists():
        raise design_error(f"{path}: design parameter file or folder not found",
                           "set param_dir in condition.txt to a CSV file with one row per case, "
                           "or to a folder holding one CSV per case")
    if path.is_file():
        table = read_table_file(path, num_params)
        _check_case_count(str(path), table.shape[0], num_cases, "data rows")
        return table
    files = files_in(path, (".csv",))
    if not files:
        raise design_error(f"{path}: the folder holds no .csv files; expected one CSV of {num_params} "
                           "numbers per case",
                           "put one CSV per case into the folder, or point param_dir at a single CSV file")
    if num_cases is not None and len(files) != num_cases:
        raise design_error(f"{path}: found {len(files)} .csv files ({files[0].name} ... {files[-1].name}), "
                           f"expected {num_cases} (Dim1 in condition.txt: one file per simulated case)",
                           "keep exactly one CSV per case in the folder, or correct Dim1")
    return np.stack([read_case_file(file, num_params) for file in files])
