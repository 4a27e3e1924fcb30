"""Colour masks: masks saved as RGB(A) images whose colours stand for class ids.

The colours come from `data.colors` or from an `id2label.json` that carries them
(`{"0": {"name": "road", "color": "#804080"}}`). A colour mask is decoded to class ids in the DataLoader worker,
with the rest of the sample (`decode.read_mask`), so that every consumer of a mask (training, evaluation, the
pre-flight check, `segtune data check`, class pixel counts) sees the same ids:

    table = ColorTable({(0, 0, 0): 0, (255, 0, 0): 1}, origin="data.colors")
    ids = table.decode(rgb, "mask.png")     # (H, W, 3) uint8 -> (H, W) uint8 class ids

Decoding is one gather: each pixel's colour is packed into a 24-bit key, which indexes a table of every
possible colour (16 M entries of uint16, built once per process on first use). Alpha is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cached_property

import numpy as np

from ..errors import DatasetError, joined
from ..recipe.colors import Color, color_problems, parse_color, to_hex

_UNMAPPED = np.iinfo(np.uint16).max  # a class id no dataset reaches (LabelSpec's lookup table stops at 2**16)


class ColorTable:
    """Colour -> class id (or the ignore index) of a dataset's colour masks.

    Attributes:
        colors: (r, g, b) -> id, in the order listed (the first colour of a class is its palette colour).
        origin: where the colours were given, for messages ("data.colors" or an id2label.json path).
    """

    def __init__(self, colors: Mapping[Color, int], origin: str) -> None:
        self.colors, self.origin = dict(colors), origin

    @classmethod
    def parse(cls, entries: Iterable[tuple[object, object]], origin: str) -> ColorTable:
        """A table from (colour as written: "#rrggbb", [r, g, b], "[r, g, b]"; class id) pairs.

        Raises:
            DatasetError: a colour that cannot be read, a colour listed twice, or an id that is not an int >= 0.
        """
        entries = list(entries)
        problems = color_problems(entries, None, -1, origin)
        if problems:
            raise DatasetError("\n".join(problems))
        return cls({parse_color(color): int(class_id) for color, class_id in entries}, origin)

    def check_ids(self, num_labels: int, ignore_index: int) -> None:
        """Raises DatasetError, naming `origin`, for ids that are neither a class id nor `ignore_index`."""
        written = [(to_hex(color), class_id) for color, class_id in self.colors.items()]
        problems = color_problems(written, num_labels, ignore_index, self.origin)
        if problems:
            raise DatasetError("\n".join(problems))

    def palette(self, fallback: tuple[Color, ...]) -> tuple[Color, ...]:
        """One colour per class of `fallback`'s length: the first colour listed for it, else its `fallback`."""
        first: dict[int, Color] = {}
        for color, class_id in self.colors.items():
            first.setdefault(class_id, color)
        return tuple(first.get(c, colour) for c, colour in enumerate(fallback))

    def decode(self, rgb: np.ndarray, where: str) -> np.ndarray:
        """Class ids (H, W) of an RGB(A) mask (H, W, 3 or 4) uint8: uint8 when every id fits, else uint16.

        Raises:
            DatasetError: naming `where`, each colour not in the table and how many pixels have it.
        """
        keys = _packed(rgb)
        ids = self._lut[keys]
        unmapped = ids == _UNMAPPED
        if unmapped.any():
            self._raise_unmapped(keys[unmapped], where)
        return ids.astype(np.uint8) if self._fits_uint8 else ids

    def _raise_unmapped(self, keys: np.ndarray, where: str) -> None:
        values, counts = np.unique(keys, return_counts=True)
        order = np.argsort(-counts, kind="stable")  # the commonest first: usually the one to add
        found = joined([f"{_hex(int(values[i]))} ({int(counts[i])} pixels)" for i in order])
        raise DatasetError(
            f"{where}: mask colours not in {self.origin}: {found}; expected one of the "
            f"{len(self.colors)} colours listed there (add each colour with its class id, or the ignore index)"
        )

    @cached_property
    def _fits_uint8(self) -> bool:
        return max(self.colors.values()) <= np.iinfo(np.uint8).max

    @cached_property
    def _lut(self) -> np.ndarray:
        """Packed colour -> id for all 2**24 colours, `_UNMAPPED` where none is listed (32 MB)."""
        lut = np.full(1 << 24, _UNMAPPED, dtype=np.uint16)
        for color, class_id in self.colors.items():
            lut[_packed(np.array([[color]], dtype=np.uint8))[0, 0]] = class_id
        return lut

    def __getstate__(self) -> dict:
        # the table is rebuilt where it is used: not copied into every DataLoader worker when they are spawned
        return {"colors": self.colors, "origin": self.origin}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ColorTable) and (self.colors, self.origin) == (other.colors, other.origin)

    def __repr__(self) -> str:
        return f"ColorTable({len(self.colors)} colours from {self.origin})"


def _packed(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint32 keys r | g << 8 | b << 16 of (H, W, 3+) uint8 colours; a channel beyond the third is dropped."""
    padded = np.zeros((*rgb.shape[:2], 4), dtype=np.uint8)
    padded[..., :3] = rgb[..., :3]
    return padded.view("<u4")[..., 0]  # one reinterpretation, not three shifts of a widened copy


def _hex(key: int) -> str:
    """The "#rrggbb" of a packed key (`_packed`)."""
    return to_hex((key & 0xFF, (key >> 8) & 0xFF, key >> 16))
