"""Design parameters from CSV: one file with a row per case or a folder of per-case files, and the file
order of a folder."""
from pathlib import Path

import numpy as np
import pytest

from modules.data.design_files import natural_sort_key
from modules.data.design_tables import load_parameter_table
from modules.errors import DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path



def test_natural_sort_key_orders_digit_runs_by_value():
    names = ["case_10.csv", "case_2.csv", "Case_1.csv", "case_02.csv", "case_100.csv"]
    assert sorted(names, key=natural_sort_key) == [
        "Case_1.csv", "case_02.csv", "case_2.csv", "case_10.csv", "case_100.csv"]
    # Text and numbers never meet at the same position, so mixed shapes sort without TypeError.
    assert sorted(["a2", "2a", "b"], key=natural_sort_key) == ["2a", "a2", "b"]


# ---------------------------------------------------------------- single CSV

def test_single_csv_without_header(tmp_path):
    path = write(tmp_path / "params.csv", "1,2.5,-3\n4, 5e-1 ,6\n\n")
    table = load_parameter_table(path, num_params=3, num_cases=2)
    assert table.dtype == np.float64
    np.testing.assert_array_equal(table, [[1, 2.5, -3], [4, 0.5, 6]])


def test_single_csv_with_header_and_bom(tmp_path):
    path = tmp_path / "params.csv"
    path.write_bytes("\ufeffwidth,height\n1,2\n3,4\n".encode("utf-8"))
    table = load_parameter_table(path, num_params=2, num_cases=None)
    np.testing.assert_array_equal(table, [[1, 2], [3, 4]])


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="nowhere.csv: design parameter file or folder not found"):
        load_parameter_table(tmp_path / "nowhere.csv", 2, None)


def test_empty_file(tmp_path):
    path = write(tmp_path / "params.csv", "\n\n")
    with pytest.raises(DataError) as info:
        load_parameter_table(path, 3, None)
    assert "params.csv: the file is empty; expected one row of 3 numbers per case" in str(info.value)


def test_header_without_rows(tmp_path):
    path = write(tmp_path / "params.csv", "a,b\n")
    with pytest.raises(DataError, match="params.csv: has a header line but no data rows"):
        load_parameter_table(path, 2, None)


def test_missing_cell_names_line_and_column(tmp_path):
    path = write(tmp_path / "params.csv", "width,height,depth\n1,2,3\n4,,6\n")
    with pytest.raises(DataError) as info:
        load_parameter_table(path, 3, None)
    message = str(info.value)
    assert "params.csv line 3, column 2 ('height'): the cell is empty; expected a number" in message
    assert "fix: fill in the design value" in message


def test_non_numeric_cell_shows_text(tmp_path):
    path = write(tmp_path / "params.csv", "1,2\n3,4\n5,abc\n")
    with pytest.raises(DataError) as info:
        load_parameter_table(path, 2, None)
    assert "params.csv line 3, column 2: 'abc' is not a number" in str(info.value)


def test_typo_in_first_data_row_reported_there_not_on_header(tmp_path):
    path = write(tmp_path / "params.csv", "width,height\n1,2x\n3,4\n")
    with pytest.raises(DataError, match=r"line 2, column 2 \('height'\): '2x' is not a number"):
        load_parameter_table(path, 2, None)


def test_wrong_column_count(tmp_path):
    path = write(tmp_path / "params.csv", "1,2,3\n4,5\n")
    with pytest.raises(DataError) as info:
        load_parameter_table(path, 3, None)
    message = str(info.value)
    assert "params.csv line 2: found 2 columns, expected 3 (num_param in condition.txt)" in message
    assert "set num_param to 2" in message


def test_row_count_against_dim1(tmp_path):
    path = write(tmp_path / "params.csv", "1,2\n3,4\n5,6\n")
    with pytest.raises(DataError) as info:
        load_parameter_table(path, 2, num_cases=4)
    assert "params.csv: found 3 data rows, expected 4 (Dim1 in condition.txt" in str(info.value)


@pytest.mark.parametrize("text", ["nan", "inf", "-Infinity"])
def test_non_finite_values(tmp_path, text):
    path = write(tmp_path / "params.csv", f"1,2\n3,{text}\n")
    with pytest.raises(DataError, match=rf"line 2, column 2: '{text}' is not a finite number"):
        load_parameter_table(path, 2, None)


# ---------------------------------------------------------------- folder of per-case CSVs

def test_folder_in_natural_order_with_rows_columns_and_headers(tmp_path):
    folder = tmp_path / "params"
    folder.mkdir()
    # Case number k holds (k, 10k); layouts vary per file on purpose.
    write(folder / "case_10.csv", "10,100\n")
    write(folder / "case_2.csv", "a,b\n2,20\n")
    write(folder / "case_1.csv", "1\n10\n")
    write(folder / "case_3.csv", "value\n3\n30\n")
    write(folder / "notes.txt", "ignored")
    write(folder / "._case_1.csv", "garbage from macOS")
    table = load_parameter_table(folder, num_params=2, num_cases=4)
    np.testing.assert_array_equal(table, [[1, 10], [2, 20], [3, 30], [10, 100]])


def test_folder_count_mismatch(tmp_path):
    folder = tmp_path / "params"
    folder.mkdir()
    for index in (1, 2, 10):
        write(folder / f"case_{index}.csv", f"{index},{index}\n")
    with pytest.raises(DataError) as info:
        load_parameter_table(folder, 2, num_cases=5)
    message = str(info.value)
    assert "found 3 .csv files (case_1.csv ... case_10.csv), expected 5 (Dim1 in condition.txt" in message


def test_folder_without_csv(tmp_path):
    write(tmp_path / "a.txt", "1,2")
    with pytest.raises(DataError, match="the folder holds no .csv files; expected one CSV of 2 numbers"):
        load_parameter_table(tmp_path, 2, None)


def test_folder_file_with_wrong_count_names_that_file(tmp_path):
    folder = tmp_path / "params"
    folder.mkdir()
    write(folder / "case_1.csv", "1\n2\n3\n")
    write(folder / "case_2.csv", "1\n2\n")
    with pytest.raises(DataError) as info:
        load_parameter_table(folder, 3, None)
    assert "case_2.csv: found 2 numbers in one column, expected 3 (num_param in condition.txt)" in str(info.value)


def test_folder_file_that_is_a_matrix(tmp_path):
    write(tmp_path / "case_1.csv", "1,2\n3,4\n")
    with pytest.raises(DataError, match=r"case_1.csv: found 2 rows of 2 columns; expected 4 numbers"):
        load_parameter_table(tmp_path, 4, None)


def test_folder_file_errors_carry_line(tmp_path):
    write(tmp_path / "case_1.csv", "x\n1\n?\n")
    with pytest.raises(DataError, match=r"case_1.csv line 3, column 1 \('x'\): '\?' is not a number"):
        load_parameter_table(tmp_path, 2, None)


def test_empty_case_file(tmp_path):
    write(tmp_path / "case_1.csv", "")
    with pytest.raises(DataError, match="case_1.csv: the file is empty; expected 2 numbers for this case"):
        load_parameter_table(tmp_path, 2, None)


# ---------------------------------------------------------------- column names (reconstruct --designs)

def test_parameter_names_come_from_the_header_row_and_round_trip_through_a_written_table(tmp_path):
    from modules.data.design_tables import table_parameter_names, write_parameter_table
    assert table_parameter_names(write(tmp_path / "plain.csv", "1,2\n3,4\n"), 2) is None
    assert table_parameter_names(write(tmp_path / "named.csv", "width,height\n1,2\n"), 2) == ["width", "height"]
    # an empty header cell gets the column's number; numbers-only names would read back as a design row
    assert table_parameter_names(write(tmp_path / "gap.csv", "width,,depth\n1,2,3\n"), 3) == [
        "width", "parameter_2", "depth"]
    assert table_parameter_names(write(tmp_path / "wide.csv", "1,2,note\n1,2\n"), 2) is None
    folder = tmp_path / "cases"
    folder.mkdir()
    write(folder / "case_1.csv", "width,height\n1,2\n")
    assert table_parameter_names(folder, 2) is None
    # a name holding a comma survives the round trip, and so do the numbers
    table = np.array([[0.125, -3e-4], [2.0, 7.5]])
    with (tmp_path / "written.csv").open("w") as stream:
        write_parameter_table(stream, ["x, mm", "strength"], table)
    assert table_parameter_names(tmp_path / "written.csv", 2) == ["x, mm", "strength"]
    np.testing.assert_array_equal(load_parameter_table(tmp_path / "written.csv", 2, 2), table)


def test_data_line_numbers_count_blank_lines_and_the_header_as_the_file_has_them(tmp_path):
    from modules.data.design_tables import data_line_numbers

    table = tmp_path / "designs.csv"
    table.write_text("a,b\n\n1,2\n\n3,4\n5,6\n")
    assert data_line_numbers(table) == [3, 5, 6]
    table.write_text("1,2\n3,4\n")
    assert data_line_numbers(table) == [1, 2]
