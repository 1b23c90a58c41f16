"""Design images: a folder with one image per case, and the images of new designs."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.data.design_images import load_images, load_images_from_paths, load_single_image_file
from modules.errors import DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def save_image(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def grey(value: int, size=(4, 4)) -> np.ndarray:
    return np.full(size, value, dtype=np.uint8)


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
