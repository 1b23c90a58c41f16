"""Design images: a folder with one image per case, or the images of new designs, as float arrays in [0, 1].

Every problem with an image raises DataError naming the file, what was expected and the fix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from modules.data.design_files import design_error, files_in
from modules.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Modes Pillow uses for single-channel images (with or without alpha).
_GRAYSCALE_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
# ITU-R 601 luma weights, the ones Pillow's convert("L") uses.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _cannot_read(path: Path, exc: BaseException) -> DataError:
    return design_error(f"{path}: cannot be read as an image ({type(exc).__name__}: {exc}); "
                  "expected a PNG or JPEG file",
                  "re-export this image, or replace it with a valid one for this case")


def _has_colour(image: Image.Image) -> bool:
    if image.mode in ("P", "PA"):
        # A palette image is grey unless some palette entry has R, G, B unequal.
        palette = np.asarray(image.getpalette() or [], dtype=np.int32).reshape(-1, 3)
        return bool(np.any(palette != palette[:, :1]))
    return image.mode not in _GRAYSCALE_MODES


def _probe_image(path: Path) -> Tuple[Tuple[int, int], bool]:
    """(width, height) and whether the image has colour, read from the header only."""
    try:
        with Image.open(path) as image:
            return image.size, _has_colour(image)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise _cannot_read(path, exc) from exc


def _pixels(path: Path) -> np.ndarray:
    """Decoded image as float32 [height, width, 1 or 3] in [0, 1]; alpha is dropped."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode == "F":
                raise design_error(f"{path}: is a 32-bit floating-point image; expected 8- or 16-bit PNG or JPEG",
                             "export the design images as 8-bit or 16-bit PNG")
            if mode in _SIXTEEN_BIT_MODES:
                pixels = np.asarray(image, dtype=np.float32)[..., None] / 65535.0
            elif not _has_colour(image):
                pixels = np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0
            else:
                pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise _cannot_read(path, exc) from exc
    return np.clip(pixels, 0.0, 1.0)


def _to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    if pixels.shape[-1] == channels:
        return pixels
    if channels == 3:
        return np.repeat(pixels, 3, axis=-1)
    return (pixels @ _LUMA_WEIGHTS)[..., None]


def _resize(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """[height, width, C] -> [C, image_size, image_size], bilinear per channel.

    Resizing the float channels (Pillow mode 'F') avoids rounding back to 8 bits
    and keeps 16-bit images at full precision.
    """
    height, width, count = pixels.shape
    if (height, width) == (image_size, image_size):
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))
    resized = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., channel]))
                          .resize((image_size, image_size), Image.Resampling.BILINEAR))
               for channel in range(count)]
    return np.clip(np.stack(resized), 0.0, 1.0)


def load_single_image_file(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One image -> float32 [channels, image_size, image_size] in [0, 1].

    Colour is reduced to luma when channels is 1; grey is repeated when it is 3.
    """
    path = Path(path)
    if not path.is_file():
        raise design_error(f"{path}: image file not found",
                     "check the path of the design image you want a prediction for")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return _resize(_to_channels(_pixels(path), channels), image_size).astype(np.float32)


def load_images_from_paths(paths: Sequence[Path], image_size: int, channels: int) -> np.ndarray:
    """Images of new designs -> float32 [len(paths), channels, image_size, image_size].

    Same preprocessing as training; `channels` is the trained model's count.
    """
    if not paths:
        raise design_error("no design images were given", "pass at least one image file")
    return np.stack([load_single_image_file(Path(path), image_size, channels) for path in paths])


def load_images(directory: Path, num_cases: Optional[int], image_size: int,
                extensions: Sequence[str] = IMAGE_EXTENSIONS) -> np.ndarray:
    """A folder with one image per case -> float32 [num_cases, C, image_size, image_size] in [0, 1].

    C is 1 when every image is greyscale and 3 when any has colour (alpha is
    dropped). All images must share one original size: mixed sizes usually mean
    files from different exports were mixed up.
    """
    directory = Path(directory)
    looked_for = ", ".join(extensions)
    if not directory.is_dir():
        raise design_error(f"{directory}: image folder not found",
                     "set param_dir in condition.txt to the folder holding one image per case")
    files = files_in(directory, extensions)
    if not files:
        raise design_error(f"{directory}: the folder holds no images ({looked_for}); expected one image per case",
                     "put one image per case into the folder, or set param_data_type to their extension")
    if num_cases is not None and len(files) != num_cases:
        raise design_error(f"{directory}: found {len(files)} images ({looked_for}; {files[0].name} ... "
                     f"{files[-1].name}), expected {num_cases} (Dim1 in condition.txt: one image per "
                     "simulated case)",
                     "keep exactly one image per case in the folder, or correct Dim1")
    # A header-only pass finds unreadable files, sizes and colour before any pixels are decoded.
    probes = [_probe_image(file) for file in files]
    first_of_size: Dict[Tuple[int, int], Tuple[str, int]] = {}
    for file, (size, _) in zip(files, probes):
        name, count = first_of_size.get(size, (file.name, 0))
        first_of_size[size] = (name, count + 1)
    if len(first_of_size) > 1:
        sizes = "; ".join(f"{width}x{height} ({count} file{'s' if count != 1 else ''}, first {name})"
                          for (width, height), (name, count) in first_of_size.items())
        raise design_error(f"{directory}: images have different sizes: {sizes}; expected one size for all cases",
                     "export every design image at the same resolution (mixed sizes usually mean "
                     "images from different exports were mixed up)")
    channels = 3 if any(colour for _, colour in probes) else 1
    images = np.empty((len(files), channels, image_size, image_size), dtype=np.float32)
    for index, file in enumerate(files):
        images[index] = _resize(_to_channels(_pixels(file), channels), image_size)
    return images
