"""Loading and scaling of the conditioner's design inputs (CSV tables and images)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules.data.design_files import (
    InputScaler,
    load_images,
    load_images_from_paths,
    load_parameter_table,
    load_single_image_file,
    natural_sort_key,
)
from modules.errors import CheckpointError, DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def save_image(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def grey(value: int, size=(4, 4)) -> np.ndarray:
    return np.full(size, value, dtype=np.uint8)


# ---------------------------------------------------------------- natural order

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


# ---------------------------------------------------------------- images

def test_grayscale_images_in_natural_order(tmp_path):
    for index, value in ((10, 100), (2, 20), (1, 10)):
        save_image(tmp_path / f"case_{index}.png", grey(value))
    images = load_images(tmp_path, num_cases=3, image_size=4)
    assert images.shape == (3, 1, 4, 4) and images.dtype == np.float32
    np.testing.assert_allclose(images[:, 0, 0, 0], np.array([10, 20, 100]) / 255, rtol=1e-6)


def test_rgb_and_rgba_give_three_channels_and_grey_is_repeated(tmp_path):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 51, 0
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 2], rgba[..., 3] = 102, 0  # fully transparent: alpha is dropped, not blended
    save_image(tmp_path / "case_1.png", rgb)
    save_image(tmp_path / "case_2.png", rgba)
    save_image(tmp_path / "case_3.jpg", grey(204))
    images = load_images(tmp_path, num_cases=3, image_size=4)
    assert images.shape == (3, 3, 4, 4)
    np.testing.assert_allclose(images[0, :, 1, 1], [1.0, 0.2, 0.0], atol=1e-6)
    np.testing.assert_allclose(images[1, :, 1, 1], [0.0, 0.0, 0.4], atol=1e-6)
    # JPEG is lossy, but a flat grey tile survives almost exactly.
    np.testing.assert_allclose(images[2, :, 1, 1], [0.8, 0.8, 0.8], atol=2 / 255)


def test_resize_to_image_size(tmp_path):
    step = np.zeros((8, 8), dtype=np.uint8)
    step[:, 4:] = 255
    save_image(tmp_path / "case_1.png", step)
    save_image(tmp_path / "case_2.png", grey(128, (8, 8)))
    images = load_images(tmp_path, num_cases=None, image_size=4)
    assert images.shape == (2, 1, 4, 4)
    row = images[0, 0, 0]
    assert row[0] < 0.5 < row[3] and np.all(np.diff(row) >= 0)
    np.testing.assert_allclose(row + row[::-1], 1.0, atol=1e-6)  # bilinear keeps the step symmetric
    np.testing.assert_allclose(images[1], 128 / 255, atol=1e-6)  # a flat image stays flat
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_sixteen_bit_png_keeps_its_range(tmp_path):
    save_image(tmp_path / "case_1.png", np.full((4, 4), 65535 // 5, dtype=np.uint16))
    images = load_images(tmp_path, num_cases=1, image_size=4)
    np.testing.assert_allclose(images[0, 0], (65535 // 5) / 65535, atol=1e-6)


def test_image_folder_missing_or_empty(tmp_path):
    with pytest.raises(DataError, match="missing: image folder not found"):
        load_images(tmp_path / "missing", None, 4)
    write(tmp_path / "readme.txt", "no images here")
    with pytest.raises(DataError, match=r"the folder holds no images \(.png, .jpg, .jpeg\)"):
        load_images(tmp_path, None, 4)


def test_image_count_mismatch(tmp_path):
    for index in (1, 2):
        save_image(tmp_path / f"case_{index}.png", grey(0))
    with pytest.raises(DataError) as info:
        load_images(tmp_path, num_cases=3, image_size=4)
    assert "found 2 images (.png, .jpg, .jpeg; case_1.png ... case_2.png), expected 3 (Dim1" in str(info.value)


def test_corrupt_png_is_named(tmp_path):
    save_image(tmp_path / "case_1.png", grey(0))
    (tmp_path / "x.png").write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(DataError) as info:
        load_images(tmp_path, num_cases=2, image_size=4)
    message = str(info.value)
    assert "x.png: cannot be read as an image (UnidentifiedImageError" in message
    assert "fix: re-export this image" in message


def test_truncated_png_is_named(tmp_path):
    whole = save_image(tmp_path / "whole.png", np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8))
    data = whole.read_bytes()
    whole.unlink()
    (tmp_path / "case_1.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="case_1.png: cannot be read as an image"):
        load_images(tmp_path, num_cases=1, image_size=4)


def test_mixed_sizes_name_first_file_of_each_size(tmp_path):
    save_image(tmp_path / "case_1.png", grey(0, (4, 4)))
    save_image(tmp_path / "case_2.png", grey(0, (4, 4)))
    save_image(tmp_path / "case_3.png", grey(0, (6, 5)))  # numpy (height, width) -> 5x6 image
    with pytest.raises(DataError) as info:
        load_images(tmp_path, num_cases=3, image_size=4)
    message = str(info.value)
    assert "images have different sizes: 4x4 (2 files, first case_1.png); 5x6 (1 file, first case_3.png)" in message
    assert "export every design image at the same resolution" in message


def test_prediction_images_forced_to_the_model_channels(tmp_path):
    rgb = np.zeros((6, 6, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 102, 51
    colour = save_image(tmp_path / "new.png", rgb)
    plain = save_image(tmp_path / "plain.png", grey(51, (6, 6)))
    as_grey = load_images_from_paths([colour, plain], image_size=3, channels=1)
    assert as_grey.shape == (2, 1, 3, 3)
    np.testing.assert_allclose(as_grey[0], 0.299 * 1.0 + 0.587 * 0.4 + 0.114 * 0.2, atol=1e-6)
    np.testing.assert_allclose(as_grey[1], 0.2, atol=1e-6)
    as_colour = load_single_image_file(plain, image_size=3, channels=3)
    assert as_colour.shape == (3, 3, 3)
    np.testing.assert_allclose(as_colour, 0.2, atol=1e-6)
    with pytest.raises(DataError, match="gone.png: image file not found"):
        load_single_image_file(tmp_path / "gone.png", 3, 1)


# ---------------------------------------------------------------- scaler

def test_scaler_fits_training_rows_only():
    x = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [100.0, -7.0, 9.0]])
    scaler = InputScaler().fit(x, train_indices=[0, 1])
    np.testing.assert_allclose(scaler.mean.numpy(), [2.0, 5.0, 3.0])
    np.testing.assert_allclose(scaler.std.numpy(), [1.0, 1.0, 1.0])  # middle column constant -> std 1
    changed = x.copy()
    changed[2] = [-1e6, 1e6, 0.0]
    other = InputScaler().fit(changed, train_indices=[0, 1])
    assert torch.equal(scaler.mean, other.mean) and torch.equal(scaler.std, other.std)
    np.testing.assert_allclose(scaler.transform(x[:2]), [[-1.0, 0.0, -1.0], [1.0, 0.0, 1.0]])


def test_scaler_population_std_and_near_constant_column():
    x = np.array([[0.1, 0.0], [0.1, 2.0], [0.1, 4.0]])
    scaler = InputScaler().fit(x, train_indices=[0, 1, 2])
    np.testing.assert_allclose(scaler.std.numpy(), [1.0, np.sqrt(8 / 3)])


def test_scaler_round_trip_numpy_and_tensor():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(6, 4))
    scaler = InputScaler().fit(x, train_indices=[0, 2, 3, 5])
    scaled = scaler.transform(x)
    assert isinstance(scaled, np.ndarray) and scaled.dtype == np.float64
    np.testing.assert_allclose(scaled[[0, 2, 3, 5]].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(scaled[[0, 2, 3, 5]].std(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(scaler.inverse(scaled), x, atol=1e-12)
    tensor = torch.tensor(x, dtype=torch.float32)
    scaled_tensor = scaler.transform(tensor)
    assert isinstance(scaled_tensor, torch.Tensor) and scaled_tensor.dtype == torch.float32
    np.testing.assert_allclose(scaled_tensor.numpy(), scaled, atol=1e-5)
    torch.testing.assert_close(scaler.inverse(scaled_tensor), tensor)


def test_image_scaler_is_per_channel():
    images = np.zeros((3, 2, 2, 2), dtype=np.float32)
    images[0, 0], images[1, 0] = 0.2, 0.6  # channel 0: mean 0.4, std 0.2 over the two training cases
    images[:, 1] = 0.5                     # channel 1: constant -> std 1
    images[2] = 9.0                        # a validation case that must not count
    scaler = InputScaler().fit(images, train_indices=[0, 1])
    np.testing.assert_allclose(scaler.mean.numpy(), [0.4, 0.5], atol=1e-7)
    np.testing.assert_allclose(scaler.std.numpy(), [0.2, 1.0], atol=1e-7)
    scaled = scaler.transform(images)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled[0, 0], -1.0, atol=1e-6)
    np.testing.assert_allclose(scaler.transform(images[1]), scaled[1])  # a single [C, H, W] image
    np.testing.assert_allclose(scaler.inverse(scaled), images, atol=1e-6)
    with pytest.raises(DataError, match="fitted on 2-channel images"):
        scaler.transform(np.zeros((1, 3, 2, 2), dtype=np.float32))


def test_scaler_state_round_trip_through_torch_save(tmp_path):
    x = np.array([[1.0, 10.0], [2.0, 30.0], [4.0, 20.0]])
    scaler = InputScaler().fit(x, train_indices=[0, 1, 2])
    path = tmp_path / "scaler.pt"
    torch.save({"input_scaler": scaler.state_dict()}, path)
    state = torch.load(path, weights_only=True)["input_scaler"]
    restored = InputScaler.from_state_dict(state)
    assert restored.kind == "table"
    np.testing.assert_array_equal(restored.transform(x), scaler.transform(x))
    with pytest.raises(DataError, match="design input has 3 parameters, the scaler was fitted on 2"):
        restored.transform(np.zeros((1, 3)))


def test_damaged_scaler_state():
    with pytest.raises(CheckpointError, match="'std' must be positive"):
        InputScaler.from_state_dict({"kind": "table", "mean": torch.zeros(2), "std": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="'kind' must be one of table, image"):
        InputScaler.from_state_dict({"kind": "?", "mean": torch.zeros(2), "std": torch.ones(2)})
