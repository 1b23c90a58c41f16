"""The conditioner's design inputs: parameter tables and images, loaded and scaled.

Per simulated case the user gives the design either as numbers (one CSV with a
row per case, or a folder with one small CSV per case) or as an image (a folder
with one image per case). Files in a folder are matched to cases in natural
sort order, so `case_2` comes before `case_10`.

Loaders return plain numpy arrays:
- parameter tables: float64 [num_cases, num_params]
- images: float32 [num_cases, channels, image_size, image_size] in [0, 1]

`InputScaler` standardises either kind, fitted on training cases only, and
saves its state as plain tensors so a checkpoint loads with weights_only=True.

Every problem with a user's file raises `DataError` naming the file, the line
and column where there is one, what was expected, and the fix.
"""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from modules.errors import CheckpointError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

_DIGITS = re.compile(r"([0-9]+)")
# Modes Pillow uses for single-channel images (with or without alpha).
_GRAYSCALE_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
# ITU-R 601 luma weights, the ones Pillow's convert("L") uses.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

ArrayLike = Union[np.ndarray, torch.Tensor]


def natural_sort_key(name: str) -> Tuple:
    """Sort key that orders digit runs by value: 'case_2' < 'case_10'.

    Splitting on digit runs always puts text at even positions and numbers at
    odd ones, so two keys never compare a str with an int. The original name
    breaks ties ('case_02' vs 'case_2') so the order is deterministic.
    """
    parts = _DIGITS.split(name)
    key = tuple(int(part) if index % 2 else part.casefold() for index, part in enumerate(parts))
    return (key, name)


def _error(message: str, fix: str) -> DataError:
    return DataError(f"{message}\n    fix: {fix}")


def _files_in(folder: Path, extensions: Sequence[str]) -> List[Path]:
    """Files of `folder` with one of `extensions` (case-insensitive), in natural order.

    Hidden files are skipped because macOS writes '._case_1.csv' companions
    next to real files on shared drives.
    """
    wanted = {extension.lower() for extension in extensions}
    files = [entry for entry in folder.iterdir()
             if entry.is_file() and not entry.name.startswith(".") and entry.suffix.lower() in wanted]
    return sorted(files, key=lambda entry: natural_sort_key(entry.name))


# ---------------------------------------------------------------- parameter tables

def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv_rows(path: Path) -> List[Tuple[int, List[str]]]:
    """(1-based line number, stripped cells) of every non-blank row of a CSV file."""
    try:
        # utf-8-sig drops the byte-order mark Excel writes at the start of CSV exports.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            rows = []
            for cells in reader:
                stripped = [cell.strip() for cell in cells]
                if any(stripped):
                    rows.append((reader.line_num, stripped))
    except UnicodeDecodeError as exc:
        raise _error(f"{path}: is not a UTF-8 text file ({exc.reason} at byte {exc.start}); "
                     "expected a CSV of numbers",
                     "save it as 'CSV UTF-8 (comma delimited)' or plain CSV") from exc
    except csv.Error as exc:
        raise _error(f"{path}: cannot be parsed as CSV ({exc})",
                     "save it as plain CSV: comma-separated numbers, one row per line") from exc
    return rows


def _split_header(rows: List[Tuple[int, List[str]]]) -> Tuple[Optional[List[str]], List[Tuple[int, List[str]]]]:
    """Separate an optional header row from the data rows.

    The first row is a header when one of its cells is text and the second row
    is all numbers. A first row that is text in every cell is a header too, so
    a typo in the first data row is reported there and not on the header line.
    """
    if not rows:
        return None, rows
    first = [cell for cell in rows[0][1] if cell]
    has_text = any(not _is_number(cell) for cell in first)
    all_text = bool(first) and all(not _is_number(cell) for cell in first)
    second_numeric = len(rows) > 1 and all(cell and _is_number(cell) for cell in rows[1][1])
    if has_text and (second_numeric or all_text):
        return rows[0][1], rows[1:]
    return None, rows


def _column_label(index: int, header: Optional[List[str]]) -> str:
    label = f"column {index + 1}"
    if header is not None and index < len(header) and header[index]:
        label += f" ('{header[index]}')"
    return label


def _parse_cell(path: Path, line: int, column: str, text: str) -> float:
    where = f"{path} line {line}, {column}"
    if not text:
        raise _error(f"{where}: the cell is empty; expected a number",
                     "fill in the design value for this case")
    try:
        value = float(text)
    except ValueError:
        raise _error(f"{where}: '{text}' is not a number",
                     "write plain numbers such as 0.25 or 1e-3, with '.' as the decimal point "
                     "and ',' between values") from None
    if not math.isfinite(value):
        raise _error(f"{where}: '{text}' is not a finite number (NaN or infinity)",
                     "replace it with the actual design value for this case")
    return value


def _check_width(path: Path, line: int, found: int, num_params: int) -> None:
    if found != num_params:
        raise _error(f"{path} line {line}: found {found} columns, expected {num_params} "
                     "(num_param in condition.txt)",
                     f"give every row exactly {num_params} values, or set num_param to {found} "
                     "if the file is right")


def _read_table_file(path: Path, num_params: int) -> np.ndarray:
    """One CSV, one row per case -> float64 [rows, num_params]."""
    rows = _read_csv_rows(path)
    if not rows:
        raise _error(f"{path}: the file is empty; expected one row of {num_params} numbers per case",
                     "export the design parameters into it, one row per simulated case")
    header, data = _split_header(rows)
    if not data:
        raise _error(f"{path}: has a header line but no data rows; expected one row of "
                     f"{num_params} numbers per case",
                     "export the design parameters below the header, one row per simulated case")
    table = np.empty((len(data), num_params), dtype=np.float64)
    for row_index, (line, cells) in enumerate(data):
        _check_width(path, line, len(cells), num_params)
        for column_index, text in enumerate(cells):
            table[row_index, column_index] = _parse_cell(path, line, _column_label(column_index, header), text)
    return table


def _read_case_file(path: Path, num_params: int) -> np.ndarray:
    """One per-case CSV holding num_params numbers as one row or one column -> float64 [num_params]."""
    rows = _read_csv_rows(path)
    if not rows:
        raise _error(f"{path}: the file is empty; expected {num_params} numbers for this case "
                     "(num_param in condition.txt)",
                     "export this case's design parameters into it, as one row or one column")
    header, data = _split_header(rows)
    if not data:
        raise _error(f"{path}: has a header line but no numbers; expected {num_params} numbers for this case",
                     "add this case's design parameters below the header")
    if len(data) == 1:
        line, cells = data[0]
        _check_width(path, line, len(cells), num_params)
        return np.array([_parse_cell(path, line, _column_label(index, header), text)
                         for index, text in enumerate(cells)], dtype=np.float64)
    if all(len(cells) == 1 for _, cells in data):
        if len(data) != num_params:
            raise _error(f"{path}: found {len(data)} numbers in one column, expected {num_params} "
                         "(num_param in condition.txt)",
                         f"list exactly {num_params} values for this case, or set num_param to "
                         f"{len(data)} if the file is right")
        return np.array([_parse_cell(path, line, _column_label(0, header), cells[0])
                         for line, cells in data], dtype=np.float64)
    widths = sorted({len(cells) for _, cells in data})
    raise _error(f"{path}: found {len(data)} rows of {', '.join(map(str, widths))} columns; expected "
                 f"{num_params} numbers (num_param in condition.txt) as one row or one column",
                 "write this case's parameters on a single line, or one value per line")


def _check_case_count(where: str, found: int, num_cases: Optional[int], unit: str) -> None:
    if num_cases is not None and found != num_cases:
        raise _error(f"{where}: found {found} {unit}, expected {num_cases} "
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
        raise _error(f"{path}: design parameter file or folder not found",
                     "set param_dir in condition.txt to a CSV file with one row per case, "
                     "or to a folder holding one CSV per case")
    if path.is_file():
        table = _read_table_file(path, num_params)
        _check_case_count(str(path), table.shape[0], num_cases, "data rows")
        return table
    files = _files_in(path, (".csv",))
    if not files:
        raise _error(f"{path}: the folder holds no .csv files; expected one CSV of {num_params} "
                     "numbers per case",
                     "put one CSV per case into the folder, or point param_dir at a single CSV file")
    if num_cases is not None and len(files) != num_cases:
        raise _error(f"{path}: found {len(files)} .csv files ({files[0].name} ... {files[-1].name}), "
                     f"expected {num_cases} (Dim1 in condition.txt: one file per simulated case)",
                     "keep exactly one CSV per case in the folder, or correct Dim1")
    return np.stack([_read_case_file(file, num_params) for file in files])


# ---------------------------------------------------------------- images

def _cannot_read(path: Path, exc: BaseException) -> DataError:
    return _error(f"{path}: cannot be read as an image ({type(exc).__name__}: {exc}); "
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
                raise _error(f"{path}: is a 32-bit floating-point image; expected 8- or 16-bit PNG or JPEG",
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
        raise _error(f"{path}: image file not found",
                     "check the path of the design image you want a prediction for")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return _resize(_to_channels(_pixels(path), channels), image_size).astype(np.float32)


def load_images_from_paths(paths: Sequence[Path], image_size: int, channels: int) -> np.ndarray:
    """Images of new designs -> float32 [len(paths), channels, image_size, image_size].

    Same preprocessing as training; `channels` is the trained model's count.
    """
    if not paths:
        raise _error("no design images were given", "pass at least one image file")
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
        raise _error(f"{directory}: image folder not found",
                     "set param_dir in condition.txt to the folder holding one image per case")
    files = _files_in(directory, extensions)
    if not files:
        raise _error(f"{directory}: the folder holds no images ({looked_for}); expected one image per case",
                     "put one image per case into the folder, or set param_data_type to their extension")
    if num_cases is not None and len(files) != num_cases:
        raise _error(f"{directory}: found {len(files)} images ({looked_for}; {files[0].name} ... "
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
        raise _error(f"{directory}: images have different sizes: {sizes}; expected one size for all cases",
                     "export every design image at the same resolution (mixed sizes usually mean "
                     "images from different exports were mixed up)")
    channels = 3 if any(colour for _, colour in probes) else 1
    images = np.empty((len(files), channels, image_size, image_size), dtype=np.float32)
    for index, file in enumerate(files):
        images[index] = _resize(_to_channels(_pixels(file), channels), image_size)
    return images


# ---------------------------------------------------------------- scaling

class InputScaler:
    """Standardise design inputs with statistics of the training cases only.

    Parameter tables [cases, num_params] get a mean and std per column; images
    [cases, C, H, W] get one per channel. A constant column or channel keeps
    std 1 so it is only shifted, never blown up.
    """

    KINDS = ("table", "image")

    def __init__(self) -> None:
        self.kind: Optional[str] = None
        self.mean: Optional[torch.Tensor] = None
        self.std: Optional[torch.Tensor] = None

    @property
    def is_fitted(self) -> bool:
        return self.mean is not None

    def fit(self, x: ArrayLike, train_indices: Sequence[int]) -> "InputScaler":
        values = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if values.ndim not in (2, 4):
            raise ValueError(f"expected [cases, num_params] or [cases, C, H, W], got shape {values.shape}")
        indices = np.asarray(train_indices, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            raise ValueError("train_indices is empty: the scaler needs at least one training case")
        if indices.min() < -values.shape[0] or indices.max() >= values.shape[0]:
            raise ValueError(f"train_indices must lie in 0..{values.shape[0] - 1}, "
                             f"got {indices.min()}..{indices.max()}")
        train = values[indices].astype(np.float64)
        axes = (0,) if values.ndim == 2 else (0, 2, 3)
        mean = train.mean(axis=axes)
        std = train.std(axis=axes)
        # Rounding leaves a constant column with std ~1e-17, not 0; dividing by it would amplify noise.
        std = np.where(std <= 1e-10 * np.maximum(np.abs(mean), 1.0), 1.0, std)
        self.kind = "table" if values.ndim == 2 else "image"
        self.mean = torch.from_numpy(mean)
        self.std = torch.from_numpy(std)
        return self

    def _shape_for(self, x: ArrayLike) -> Tuple[int, ...]:
        if not self.is_fitted:
            raise RuntimeError("InputScaler is not fitted: call fit() or from_state_dict() first")
        features = self.mean.shape[0]
        if self.kind == "table":
            if x.shape[-1] != features:
                raise _error(f"design input has {x.shape[-1]} parameters, the scaler was fitted on {features}",
                             f"give {features} parameters per design, as in training (num_param)")
            return (features,)
        channel_axis = 1 if x.ndim == 4 else 0
        if x.ndim not in (3, 4) or x.shape[channel_axis] != features:
            raise _error(f"design image batch has shape {tuple(x.shape)}, the scaler was fitted on "
                         f"{features}-channel images",
                         f"load the images with {features} channel(s), as in training")
        return (features, 1, 1)

    def _apply(self, x: ArrayLike, inverse: bool) -> ArrayLike:
        shape = self._shape_for(x)
        if isinstance(x, torch.Tensor):
            mean = self.mean.reshape(shape).to(device=x.device, dtype=x.dtype)
            std = self.std.reshape(shape).to(device=x.device, dtype=x.dtype)
        else:
            dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
            mean = self.mean.numpy().reshape(shape).astype(dtype)
            std = self.std.numpy().reshape(shape).astype(dtype)
        return x * std + mean if inverse else (x - mean) / std

    def transform(self, x: ArrayLike) -> ArrayLike:
        """(x - mean) / std; numpy in -> numpy out, tensor in -> tensor out (same dtype and device)."""
        return self._apply(x, inverse=False)

    def inverse(self, x: ArrayLike) -> ArrayLike:
        """Undo `transform`."""
        return self._apply(x, inverse=True)

    def state_dict(self) -> Dict[str, Union[str, torch.Tensor]]:
        if not self.is_fitted:
            raise RuntimeError("InputScaler is not fitted: nothing to save")
        return {"kind": self.kind, "mean": self.mean.clone(), "std": self.std.clone()}

    @classmethod
    def from_state_dict(cls, state: Dict[str, Union[str, torch.Tensor]]) -> "InputScaler":
        """Rebuild a fitted scaler; a malformed state (a damaged checkpoint) raises CheckpointError."""
        problems = []
        if not isinstance(state, dict):
            problems.append(f"expected a dict, got {type(state).__name__}")
        else:
            if state.get("kind") not in cls.KINDS:
                problems.append(f"'kind' must be one of {', '.join(cls.KINDS)}, got {state.get('kind')!r}")
            mean, std = state.get("mean"), state.get("std")
            if not (isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)
                    and mean.ndim == 1 and mean.shape == std.shape):
                problems.append("'mean' and 'std' must be 1-D tensors of equal length")
            elif not bool(torch.all(std > 0)):
                problems.append("'std' must be positive")
        if problems:
            raise CheckpointError("input scaler state in the checkpoint is damaged: " + "; ".join(problems)
                                  + "\n    fix: retrain the conditioner to write a fresh checkpoint")
        scaler = cls()
        scaler.kind = state["kind"]
        scaler.mean = state["mean"].detach().to(torch.float64).cpu().clone()
        scaler.std = state["std"].detach().to(torch.float64).cpu().clone()
        return scaler
