"""Reading one stored image or mask, with errors that name the file and what was wrong.

Sources keep `datasets.Image()` columns; the torch datasets read them with `decode=False`, so each value
is `{"bytes": ..., "path": ...}` and decoding happens here:

- images as `datasets` decodes them (PIL, EXIF orientation applied, then `convert("RGB")`), except
  8-bit grey/RGB/RGBA PNGs, which libspng (`pyspng`) decodes to the same pixels ~25% faster: PNG
  decoding is most of the cost of a Cityscapes sample. (torchvision.io's decoders are deprecated
  since torchvision 0.29.)
- masks through PIL, because a palette (P-mode) PNG must give its palette *indices*, which are the
  classes, never its colours; 16-bit masks come back as uint16. With a colour table (`data.colors`), RGB and
  RGBA masks are colour masks instead, decoded to class ids here (libspng for 8-bit PNGs).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

from ..errors import DatasetError
from .colors import ColorTable

try:
    import pyspng
except ImportError:  # PIL decodes the same PNGs, a little slower
    pyspng = None

# PIL modes that hold one channel of class ids; "1" is a binary mask.
_INDEX_MODES = {"P", "L", "1", "I", "I;16", "I;16L", "I;16B", "I;16N"}


def describe(value: Any, fallback: str) -> str:
    """A stored image's file name for messages, or `fallback` (e.g. "train[12] column 'label'")."""
    path = value.get("path") if isinstance(value, dict) else None
    return f"{fallback} ({path!r})" if path else fallback


def _payload(value: Any, where: str) -> bytes | str:
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        if value.get("path"):
            return value["path"]
    if isinstance(value, (str, Path)):
        return str(value)
    raise DatasetError(f"{where}: expected a stored image ({{'bytes', 'path'}}), found {type(value).__name__}")


def _reason(error: Exception) -> str:
    if isinstance(error, PIL.UnidentifiedImageError):
        return "not an image PIL can identify: unknown format, or corrupt or truncated data"
    return f"{type(error).__name__}: {error}"


def _read_bytes(payload: bytes | str, where: str) -> bytes:
    if isinstance(payload, bytes):
        return payload
    try:
        return Path(payload).read_bytes()
    except OSError as error:
        raise DatasetError(f"{where}: cannot read file: {error.strerror or error}") from None


def read_image(value: Any, where: str) -> torch.Tensor:
    """An RGB image as uint8 (3, H, W); grayscale, RGBA and palette images are converted.

    Raises:
        DatasetError: missing, unreadable or corrupt file; the message names it.
    """
    data = _read_bytes(_payload(value, where), where)
    image = _read_png_fast(data)
    return image if image is not None else _read_image_pil(data, where)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(data: bytes, bit_depth: int, colour_types: tuple[int, ...]) -> bool:
    # The IHDR chunk always comes first: bit depth at byte 24, colour type at byte 25.
    return len(data) > 26 and data[:8] == _PNG_SIGNATURE and data[24] == bit_depth and data[25] in colour_types


def _spng(data: bytes, output: str | None) -> np.ndarray | None:
    """libspng's decoding (HWC or HW uint8), or None when pyspng is missing or refuses the file."""
    if pyspng is None:
        return None
    try:
        return pyspng.load(data, format=output)
    except RuntimeError:
        return None  # PIL decodes it, or explains why it cannot be read


def _read_png_fast(data: bytes) -> torch.Tensor | None:
    """An 8-bit grey/RGB/RGBA PNG as uint8 (3, H, W) (HWC memory) through libspng; None otherwise."""
    # palette PNGs and EXIF orientation (an eXIf chunk before the pixels) are left to PIL
    if not _is_png(data, bit_depth=8, colour_types=(0, 2, 6)) or b"eXIf" in data[: data.find(b"IDAT")]:
        return None
    array = _spng(data, "RGB")
    return None if array is None else torch.from_numpy(array).permute(2, 0, 1)


def _read_image_pil(data: bytes, where: str) -> torch.Tensor:
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            if image.getexif().get(PIL.Image.ExifTags.Base.Orientation) is not None:
                image = PIL.ImageOps.exif_transpose(image)  # as `datasets` shows the picture
            array = np.array(image if image.mode == "RGB" else image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as error:
        raise DatasetError(f"{where}: not a readable image ({_reason(error)})") from None
    return torch.from_numpy(array).permute(2, 0, 1)


def read_mask(value: Any, where: str, colors: ColorTable | None = None) -> np.ndarray:
    """A mask as an integer array (H, W) of raw values: palette indices for P-mode, uint16 for 16-bit; with
    `colors`, an RGB or RGBA mask as the class ids of its colours (alpha ignored).

    Raises:
        DatasetError: unreadable or corrupt file, a colour mask whose channels differ (without `colors`), or
            (with `colors`) colours the table does not list, each with its pixel count.
    """
    data = _read_bytes(_payload(value, where), where)
    if colors is not None:
        rgb = _read_color_mask(data, where)
        if rgb is not None:
            return colors.decode(rgb, where)
    if _is_png(data, bit_depth=8, colour_types=(0,)):  # 8-bit grey, the usual mask: libspng is faster
        fast = _spng(data, None)
        if fast is not None:
            return fast
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            mode = image.mode
            if mode not in _INDEX_MODES and mode not in ("RGB", "RGBA", "LA", "PA"):
                raise DatasetError(
                    f"{where}: mask has mode {mode!r}; expected one channel of class ids (L, P or 16-bit)"
                )
            array = np.array(image)  # a writable copy: torch refuses read-only buffers
    except DatasetError:
        raise
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise DatasetError(f"{where}: not a readable mask image ({_reason(error)})") from None
    if array.ndim == 3:
        array = _single_channel(array, mode, where)
    return array.astype(np.uint8) if array.dtype == bool else array


def _read_color_mask(data: bytes, where: str) -> np.ndarray | None:
    """The (H, W, 3+) uint8 pixels of an RGB or RGBA mask; None for any other mode (class ids, read as before)."""
    if _is_png(data, bit_depth=8, colour_types=(2, 6)):
        fast = _spng(data, "RGB")
        if fast is not None:
            return fast
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            return np.array(image) if image.mode in ("RGB", "RGBA") else None
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise DatasetError(f"{where}: not a readable mask image ({_reason(error)})") from None


class ColourMaskError(DatasetError):
    """A mask that is a colour image (RGB or RGBA, channels differing), read without `data.colors`; `rgb` holds its
    (H, W, 3) pixels, for the diagnosis to list the colours (`mask_values.py`) without decoding it again."""

    def __init__(self, message: str, rgb: np.ndarray) -> None:
        super().__init__(message)
        self.rgb = rgb


def _single_channel(array: np.ndarray, mode: str, where: str) -> np.ndarray:
    # Some tools save index masks as RGB with equal channels; a true colour-coded mask is refused.
    first = array[..., 0]
    if mode in ("LA", "PA") or all(np.array_equal(first, array[..., c]) for c in (1, 2)):
        return first
    raise ColourMaskError(
        f"{where}: mask is a colour image (mode {mode}) with differing channels; expected one channel of class "
        "ids (mode L, P or 16-bit). Convert colour-coded masks to class indices first",
        array[..., :3],
    )


def image_size(value: Any, where: str) -> tuple[int, int]:
    """(height, width) of a stored image from its header, without decoding pixels.

    Raises:
        DatasetError: missing, unreadable or corrupt file.
    """
    payload = _payload(value, where)
    if isinstance(payload, str) and not Path(payload).is_file():
        _read_bytes(payload, where)  # raises, naming the file and the reason
    # A path is opened as a file: PIL reads the header only, not the whole file (the pre-flight check's cost)
    source = io.BytesIO(payload) if isinstance(payload, bytes) else payload
    try:
        with PIL.Image.open(source) as image:
            width, height = image.size
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise DatasetError(f"{where}: not a readable image ({_reason(error)})") from None
    return height, width


def check_same_size(image_hw: tuple[int, ...], mask_hw: tuple[int, ...], image_name: str, mask_name: str) -> None:
    """Raises DatasetError when an image and its mask differ in size, naming both files."""
    if tuple(image_hw) != tuple(mask_hw):
        raise DatasetError(
            f"{image_name} is {image_hw[0]}x{image_hw[1]} (HxW) but {mask_name} is {mask_hw[0]}x{mask_hw[1]}"
        )
