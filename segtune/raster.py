"""Images read and written band by band, for prediction on images of any size in bounded memory.

    raster = open_raster("scene.tif")        # a TIFF: only its header is read here
    rows = raster.read(1024, 2048)            # (1024, W, 3) uint8: only the strips or tiles holding those rows
    write_tiff("labels.tif", bands, height, width, np.uint8)    # streamed from an iterator of row bands

TIFF (tiled or stripped, classic or BigTIFF) is read through tifffile, one strip or tile row at a time:
nothing decodes the whole image. Any other format (PNG, JPEG, ...) is decoded whole by Pillow, since
neither format can be read by rows through a maintained reader; a PIL image or an array given in memory
is used as it is.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DatasetError

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_JPEG_COMPRESSIONS = {6, 7, 34892, 33007}  # tifffile hands these their JPEG tables (TiffPage.segments does too)
_MINISBLACK, _RGB, _PALETTE = 1, 2, 3  # TIFF PhotometricInterpretation values
TILE = 256  # tile side of the TIFFs written here: a multiple of 16, as TIFF requires


def is_tiff(path: str | os.PathLike) -> bool:
    """True if the file starts like a TIFF or BigTIFF (False for anything unreadable: its reader says why)."""
    try:
        with open(path, "rb") as file:
            return file.read(4) in _TIFF_MAGIC
    except OSError:
        return False


class Raster:
    """An RGB image whose rows are read on demand: `height`, `width`, `read(y1, y2)`; a context manager."""

    height: int
    width: int

    def read(self, y1: int, y2: int) -> np.ndarray:
        """Rows [y1, y2) as (y2 - y1, width, 3) uint8."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the file, if any."""

    def __enter__(self) -> Raster:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class ArrayRaster(Raster):
    """An image already in memory (a PIL image, or an (H, W, 3) uint8 array)."""

    def __init__(self, image: Image.Image | np.ndarray) -> None:
        self._pixels = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else image
        self.height, self.width = self._pixels.shape[:2]

    def read(self, y1: int, y2: int) -> np.ndarray:
        return self._pixels[y1:y2]


class TiffRaster(Raster):
    """A TIFF's first page (the full-resolution image), read through tifffile a strip or tile row at a time.

    8-bit greyscale, RGB(A) and palette images, chunky or planar; any compression tifffile decodes (JPEG and
    others need the `imagecodecs` package). With `rgb=False`, any 2-D image, read as stored (`read_samples`),
    such as the class-index maps `write_tiff` writes.

    Raises:
        DatasetError: the file is missing or not a readable TIFF, or holds an image this reader cannot give as
            8-bit RGB (named, with what was found).
    """

    def __init__(self, path: str | os.PathLike, rgb: bool = True) -> None:
        import tifffile

        self.path, self._rgb = str(path), rgb
        try:
            self._tiff = tifffile.TiffFile(self.path)
        except (OSError, ValueError, tifffile.TiffFileError) as error:
            raise DatasetError(f"{self.path}: cannot read the TIFF ({error})") from None
        try:
            try:
                page = self._tiff.pages.first
            except (IndexError, ValueError, tifffile.TiffFileError) as error:
                raise DatasetError(f"{self.path}: cannot read the TIFF ({error or 'no image'})") from None
            self._open(page)
        except BaseException:
            self._tiff.close()
            raise

    def _open(self, page) -> None:
        self._page = page
        self.height, self.width = page.imagelength, page.imagewidth
        expected = {_MINISBLACK: (1, 2), _RGB: (3, 4), _PALETTE: (1,)}
        if page.imagedepth != 1 or (self._rgb and page.photometric not in expected):
            raise DatasetError(
                f"{self.path}: expected a 2-D greyscale, RGB or palette image, found photometric "
                f"{page.photometric.name}, depth {page.imagedepth}"
            )
        if self._rgb and (page.samplesperpixel not in expected[page.photometric] or page.dtype != np.uint8):
            raise DatasetError(
                f"{self.path}: expected 8-bit samples (uint8), {' or '.join(map(str, expected[page.photometric]))} "
                f"per pixel, found {page.dtype} x {page.samplesperpixel}"
            )
        self._segment_rows = page.tilelength if page.is_tiled else page.rowsperstrip
        self._columns = math.ceil(self.width / page.tilewidth) if page.is_tiled else 1
        self._planes = page.samplesperpixel if page.planarconfig == 2 else 1
        self._decode_args = (
            {"jpegtables": page.jpegtables, "jpegheader": page.jpegheader}
            if page.compression in _JPEG_COMPRESSIONS
            else {}
        )
        self.segments_read = 0  # strips or tiles decoded (what reading the bands cost)
        self.read(0, 1)  # decode one strip or tile now: an unsupported compression fails here, naming the file
        self.segments_read = 0

    def _segments(self, y1: int, y2: int) -> list[int]:
        """Indices (TIFF's order: plane, segment row, segment column) of the strips or tiles holding rows [y1, y2)."""
        per_plane = math.ceil(self.height / self._segment_rows) * self._columns
        rows = range(y1 // self._segment_rows, (y2 - 1) // self._segment_rows + 1)
        return [
            p * per_plane + r * self._columns + c
            for p in range(self._planes)
            for r in rows
            for c in range(self._columns)
        ]

    def _decode(self, data: bytes | None, index: int) -> tuple:
        try:
            return self._page.decode(data, index, **self._decode_args)
        except Exception as error:  # a codec's own error types (imagecodecs has many): bad data, not a bug here
            hint = " (pip install imagecodecs)" if "imagecodecs" in str(error).lower() else ""
            raise DatasetError(
                f"{self.path}: cannot decode {self._page.compression.name}-compressed data: {error}{hint}"
            ) from None

    def read_samples(self, y1: int, y2: int) -> np.ndarray:
        """Rows [y1, y2) as stored: (y2 - y1, width, samples per pixel)."""
        page, indices = self._page, self._segments(y1, y2) if y2 > y1 else []
        out = np.zeros((max(y2 - y1, 0), self.width, page.samplesperpixel), page.dtype)
        segments = self._tiff.filehandle.read_segments(
            [page.dataoffsets[i] for i in indices], [page.databytecounts[i] for i in indices], indices=indices
        )
        for data, index in segments:
            # (1, rows, columns, samples) at (plane, depth, y, x, sample); tiles come padded to full size
            segment, (plane, _, y, x, _), _ = self._decode(data, index)
            self.segments_read += 1
            if segment is None:  # an empty segment: zeros
                continue
            top, bottom = max(y, y1), min(y + segment.shape[1], y2, self.height)
            width = min(segment.shape[2], self.width - x)
            out[top - y1 : bottom - y1, x : x + width, plane : plane + segment.shape[3]] = segment[
                0, top - y : bottom - y, :width
            ]
        return out

    def read(self, y1: int, y2: int) -> np.ndarray:
        samples = self.read_samples(y1, y2)
        if self._page.photometric == _PALETTE:  # 16-bit colour map -> 8-bit RGB
            return np.ascontiguousarray((self._page.colormap >> 8).astype(np.uint8).T[samples[..., 0]])
        if self._page.photometric == _MINISBLACK:
            return np.repeat(samples[..., :1], 3, axis=-1)
        return samples[..., :3]

    def close(self) -> None:
        self._tiff.close()


class RowCache:
    """The rows of a raster that the current windows need, read once as the windows move down.

    `rows(y1, y2)` drops the rows above `y1` (no later window needs them: windows come top to bottom) and
    reads only the rows below what it holds, so each strip or tile is decoded about once (a segment that
    straddles two requests is decoded twice).
    """

    def __init__(self, raster: Raster) -> None:
        self.raster = raster
        self.top = 0
        self._rows = np.zeros((0, raster.width, 3), np.uint8)

    def rows(self, y1: int, y2: int) -> np.ndarray:
        """Rows [y1, y2) of the raster, (y2 - y1, width, 3) uint8."""
        bottom = self.top + len(self._rows)
        if y1 < self.top or y1 > bottom:  # nothing held is of use
            self.top, self._rows, bottom = y1, self._rows[:0], y1
        self._rows, self.top = self._rows[y1 - self.top :], y1
        if y2 > bottom:
            self._rows = np.concatenate([self._rows, self.raster.read(bottom, y2)])
        return self._rows[: y2 - y1]


def _tiles(bands: Iterable[np.ndarray], height: int, shape: tuple[int, ...], dtype: np.dtype) -> Iterator[np.ndarray]:
    """Re-cut row bands of any heights into TILE x TILE tiles, row of tiles after row of tiles, as tifffile
    takes them; only one row of tiles is held. `shape` is a row's: (width,) or (width, channels)."""
    strip, filled, done, width = np.zeros((TILE, *shape), dtype), 0, 0, shape[0]
    for band in bands:
        while len(band):
            take = min(TILE - filled, len(band))
            strip[filled : filled + take], filled, band = band[:take], filled + take, band[take:]
            if filled == TILE or done + filled == height:
                for x in range(0, width, TILE):
                    yield strip[:filled, x : x + TILE]  # tifffile pads short tiles with zeros
                done, filled = done + filled, 0
    if done + filled != height:
        raise ValueError(f"expected {height} rows, the bands gave {done + filled}")


def write_tiff(
    path: str | os.PathLike,
    bands: Iterable[np.ndarray],
    height: int,
    width: int,
    dtype: np.dtype | type,
    rgb: bool = False,
) -> Path:
    """Write row bands ((n, width) class indices, or (n, width, 3) uint8 with `rgb`), top to bottom, as a tiled,
    deflate-compressed TIFF; BigTIFF when the pixels pass 2 GB. Only one row of 256-pixel tiles is held.

    Returns the path. A failure (in the bands too) removes the partial file and raises.
    """
    import tifffile

    path, row = Path(path), (width, 3) if rgb else (width,)
    size = height * math.prod(row) * np.dtype(dtype).itemsize
    try:
        tifffile.imwrite(
            path,
            _tiles(bands, height, row, np.dtype(dtype)),
            shape=(height, *row),
            dtype=dtype,
            tile=(TILE, TILE),
            compression="zlib",
            photometric="rgb" if rgb else "minisblack",
            bigtiff=size > 2**31,  # classic TIFF offsets stop at 4 GB; compressed data can outgrow the pixels
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
