"""The label contract: what a mask value means, decided in one place.

Every source stores masks in its own convention: plain class indices, ADE20K's "0 is other, 1..150 are
classes" (`reduce_labels`), Cityscapes' label ids that map onto 19 train ids. `LabelSpec` turns a raw
mask into train ids exactly once, in the data layer (`validate` when read, then `map`: on the full mask
for evaluation, on the crop for training), and every other part (image processor, loss, metric, model
config) reads `num_labels`, `id2label` and `ignore_index` from the same object:

    spec = LabelSpec(id2label={0: "road", 1: "car"}, ignore_index=255)
    labels = spec.encode(np.array(Image.open("mask.png")), "mask.png")   # values in {0, 1, 255}

The image processor never reduces labels (`do_reduce_labels=False`, see `image_processor.py`) and never sees
a mask: a label that went through `map` is final. transformers' example script reduces twice when both
its flag and the processor's are set; here there is no second place that could.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import DatasetError, listing
from .colors import Color, ColorTable

if TYPE_CHECKING:
    from ..recipe import DataConfig
    from .sources.base import Source

# Raw masks are 8- or 16-bit images, so one lookup table over every 16-bit value maps any of them.
LUT_SIZE = 1 << 16
# A raw value without a train id. Not -1: that (like -100) is a common ignore index, and ignored values are valid.
INVALID = int(np.iinfo(np.int64).min)


@dataclass(frozen=True)
class LabelSpec:
    """Class names, colours and the raw-mask -> train-id mapping of one dataset.

    Attributes:
        id2label: train id -> class name, ids contiguous from 0.
        palette: one RGB colour per class (for prediction grids and P-mode masks).
        ignore_index: label of pixels the loss and the metric skip (padding, unlabelled, "other").
        reduce_labels: raw 0 -> ignore, raw k -> k - 1 (ADE20K); raw `ignore_index` stays ignored.
        label_map: raw value -> train id (Cityscapes label ids); raw values not listed become ignore.
        strict_label_map: raw values the label_map does not list are invalid (reported like out-of-range
            labels) instead of ignored: for maps that list every value a file may hold (COCO-Stuff's ids).
        colors: colour -> class id of colour (RGB/RGBA) masks, decoded when read (`decode.read_mask`); the
            ids they give are train ids, so they cannot be reduced or mapped again.
        overrides: the recipe's `data.label_map`, raw value -> train id or `ignore_index`, for any source
            ({255: 1} for binary masks whose foreground is 255). It acts on the values as stored in the files
            read and wins over the contract above for the values it lists: `{0: 3}` on ADE20K makes raw 0
            ("other") class 3 instead of ignored, `{6: 0}` on Cityscapes makes label id 6 (ground) train id 0
            (road); the values it does not list keep the source's contract. It is the lookup table's last
            entries, so it costs nothing per pixel.
    """

    id2label: dict[int, str]
    palette: tuple[Color, ...] = ()
    ignore_index: int = 255
    reduce_labels: bool = False
    label_map: Mapping[int, int] | None = field(default=None, compare=False)
    strict_label_map: bool = False
    colors: ColorTable | None = field(default=None, compare=False)
    overrides: Mapping[int, int] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        ids = sorted(self.id2label)
        if ids != list(range(len(ids))) or not ids:
            raise DatasetError(f"id2label: expected ids 0..N-1 with N >= 1, found {listing(ids, inline=True)}")
        if 0 <= self.ignore_index < len(ids):
            raise DatasetError(
                f"data.ignore_index {self.ignore_index} is a class id (0..{len(ids) - 1}); pick a value outside that range"
            )
        if self.reduce_labels and self.label_map is not None:
            raise DatasetError(
                "reduce_labels cannot be combined with a label_map (Cityscapes ids): labels would be mapped twice"
            )
        self._check_overrides()
        if self.colors is not None:
            self._check_colors()
        if not self.palette:
            object.__setattr__(self, "palette", default_palette(len(ids)))
        if len(self.palette) != len(ids):
            raise DatasetError(f"palette: expected {len(ids)} colours, one per class, found {len(self.palette)}")

    def _check_colors(self) -> None:
        if self.reduce_labels or self.label_map is not None or self.overrides:
            raise DatasetError(
                f"{self.colors.origin}: colour masks give class ids directly; they cannot be combined with "
                "reduce_labels, a label map or data.label_map (labels would be mapped twice; map a colour to another "
                "class in the colours themselves)"
            )
        self.colors.check_ids(self.num_labels, self.ignore_index)

    def _check_overrides(self) -> None:
        """The recipe checks `data.label_map` against the classes it knows; the source's are only known here."""
        n = len(self.id2label)
        keys = [raw for raw in self.overrides or {} if not 0 <= raw < LUT_SIZE]
        if keys:
            raise DatasetError(f"data.label_map: expected raw mask values 0..{LUT_SIZE - 1} as keys, found {keys}")
        bad = {raw: v for raw, v in (self.overrides or {}).items() if v != self.ignore_index and not 0 <= v < n}
        if bad:
            raise DatasetError(
                f"data.label_map: expected class ids 0..{n - 1} or the ignore index {self.ignore_index} as values, "
                f"found {bad}"
            )

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def mask_dtype(self) -> torch.dtype:
        """The narrowest of uint8, int16, int32 holding every train id and the ignore index.

        Masks cross from DataLoader workers in it: uint8 (most datasets) is 8x less to move than int64.
        """
        for dtype in (torch.uint8, torch.int16, torch.int32):
            info = torch.iinfo(dtype)
            if self.num_labels - 1 <= info.max and info.min <= self.ignore_index <= info.max:
                return dtype
        return torch.int64

    @cached_property
    def lut(self) -> np.ndarray:
        """Raw value -> train id for every 16-bit value; -1 where a raw value is invalid."""
        lut = np.full(LUT_SIZE, INVALID, dtype=np.int64)
        n = self.num_labels
        if self.label_map is not None:
            lut[:] = INVALID if self.strict_label_map else self.ignore_index
            for raw, train_id in self.label_map.items():
                if 0 <= raw < LUT_SIZE:
                    lut[raw] = train_id if 0 <= train_id < n else self.ignore_index
        elif self.reduce_labels:
            lut[0] = self.ignore_index
            lut[1 : n + 1] = np.arange(n)
        else:
            lut[:n] = np.arange(n)
        if 0 <= self.ignore_index < LUT_SIZE and self.label_map is None:
            lut[self.ignore_index] = self.ignore_index
        if self.reduce_labels and self.ignore_index != 255:
            lut[255] = self.ignore_index  # the ADE20K files' own "unlabelled" value, as transformers reduces it
        for raw, train_id in (self.overrides or {}).items():  # last: the recipe's word wins over the source's
            lut[raw] = train_id
        return lut

    def valid_raw_values(self) -> str:
        """The raw mask values this spec accepts, in words (for error messages)."""
        listed = (
            f", or one of the values data.label_map lists: {_ranges(sorted(self.overrides))}" if self.overrides else ""
        )
        return self._contract_values() + listed

    def _contract_values(self) -> str:
        n, ignore = self.num_labels, self.ignore_index
        if self.label_map is not None and self.strict_label_map:
            return f"one of the raw ids the label map lists: {_ranges(sorted(self.label_map))}"
        if self.label_map is not None:
            return "any value (unmapped ids become the ignore index)"
        if self.reduce_labels:
            return f"0 (ignored) and 1..{n} (classes 0..{n - 1} after reduce_labels), or the ignore index {ignore}"
        return f"class ids in [0, {n}) or the ignore index {ignore}"

    @cached_property
    def _byte_check(self) -> tuple[int, tuple[int, ...]]:
        """For 8-bit masks: (T, allowed) such that a value is invalid iff it is >= T and not in `allowed`."""
        valid = self.lut[:256] != INVALID
        invalid = np.flatnonzero(~valid)
        first = int(invalid[0]) if invalid.size else 256
        return first, tuple(int(v) for v in np.flatnonzero(valid[first:]) + first)

    def _check_bytes(self, raw: np.ndarray, where: str) -> None:
        """Validate an 8-bit mask in a few vectorised passes (no histogram unless something is wrong)."""
        first, allowed = self._byte_check
        if first > 255 or raw.size == 0 or raw.max() < first:
            return
        if len(allowed) > 3:
            self.count_raw(raw, where)  # general path; raises with the list
            return
        suspect = raw >= first
        for value in allowed:
            suspect &= raw != value
        if suspect.any():
            self._raise_invalid(np.unique(raw[suspect]), where)

    def count_raw(self, raw: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
        """Distinct raw values of a mask and how many pixels carry each.

        Raises:
            DatasetError: a value is negative, or no train id exists for it; the message lists them.
        """
        values, counts = self.raw_histogram(raw, where)
        bad = values[self.lut[values] == INVALID]
        if bad.size:
            self._raise_invalid(bad, where)
        return values, counts

    def raw_histogram(self, raw: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
        """Distinct raw values of a mask (each < 65536) and their pixels, whether or not they have a train id.

        Raises:
            DatasetError: a value is negative or >= 65536 (no lookup table entry), or the mask is not integer.
        """
        if raw.dtype.kind not in "biu":
            raise DatasetError(f"{where}: mask has dtype {raw.dtype}; expected integer class ids")
        if raw.dtype.kind == "i" and raw.size and raw.min() < 0:
            self._raise_invalid(np.unique(raw[raw < 0]), where)
        if raw.size and raw.max() >= LUT_SIZE:  # 32-bit masks: list the values before any histogram
            self._raise_invalid(np.unique(raw[raw >= LUT_SIZE]), where)
        counts = np.bincount(raw.ravel())
        values = np.flatnonzero(counts)
        return values, counts[values]

    def validate(self, raw: np.ndarray, where: str) -> None:
        """Check that every value of a raw mask (H, W) has a train id (or is ignored).

        Raises:
            DatasetError: naming `where` and listing the values without a train id.
        """
        if raw.dtype == np.uint8:
            self._check_bytes(raw, where)  # a few vectorised passes, no histogram unless something is wrong
        else:
            self.count_raw(raw, where)

    def map(self, raw: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Train ids (H, W) of `mask_dtype` for a validated raw mask: the one place labels are mapped or reduced."""
        raw = raw.numpy() if isinstance(raw, torch.Tensor) else raw
        if raw.dtype == np.uint8 and self.mask_dtype == torch.uint8:
            encoded = raw if self._identity else np.take(self._byte_lut, raw)
            return torch.from_numpy(np.ascontiguousarray(encoded))
        return torch.from_numpy(self.lut[raw.astype(np.intp, copy=False)]).to(self.mask_dtype)

    def encode(self, raw: np.ndarray, where: str) -> torch.Tensor:
        """`validate` then `map`: a raw mask (H, W) as train ids (H, W) of `mask_dtype`.

        Raises:
            DatasetError: the mask holds values with no train id; the message lists them.
        """
        self.validate(raw, where)
        return self.map(raw)

    def class_pixels(self, raw: torch.Tensor) -> torch.Tensor:
        """Pixels per train id (num_labels,) of a validated raw mask or region; ignored pixels left out."""
        counts = torch.bincount(raw.reshape(-1) if raw.dtype == torch.uint8 else raw.reshape(-1).long())
        train_ids = self._lut_tensor[: counts.numel()]
        keep = (train_ids >= 0) & (train_ids < self.num_labels) & (counts > 0)
        return torch.bincount(train_ids[keep], weights=counts[keep].double(), minlength=self.num_labels)

    @cached_property
    def _identity(self) -> bool:
        return self.label_map is None and not self.reduce_labels and not self.overrides

    @cached_property
    def _lut_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.lut)

    @cached_property
    def _byte_lut(self) -> np.ndarray:
        return np.where(self.lut[:256] == INVALID, 0, self.lut[:256]).astype(np.uint8)

    def class_counts(self, raw: np.ndarray, where: str) -> np.ndarray:
        """Pixels per train id, then ignored pixels last: shape (num_labels + 1,).

        Raises:
            DatasetError: as `validate`.
        """
        values, counts = self.count_raw(raw, where)
        train_ids = self.lut[values]
        histogram = np.zeros(self.num_labels + 1, dtype=np.int64)
        slots = np.where(train_ids == self.ignore_index, self.num_labels, train_ids)
        np.add.at(histogram, slots, counts)
        return histogram

    def invalid_message(self, bad: np.ndarray, where: str) -> str:
        """The problem of a mask `where` holding the raw values `bad`, which have no train id."""
        listed = listing(bad.tolist(), inline=True)
        if self.label_map is None:
            what = f"are outside [0, {self.num_labels}) and not the ignore index {self.ignore_index}"
        else:
            what = "are out of range: the label map has no train id for them"
        return f"{where}: mask values {listed} {what}; expected {self.valid_raw_values()}"

    def _raise_invalid(self, bad: np.ndarray, where: str) -> None:
        raise DatasetError(self.invalid_message(bad, where))


def _ranges(values: list[int]) -> str:
    """Sorted integers in words: [0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8"."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def default_palette(n: int) -> tuple[Color, ...]:
    """n distinct colours, PASCAL VOC's bit-interleaved palette (class 0 black, then red, green, ...)."""
    colours = []
    for i in range(n):
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


def palette_from_hex(text: str) -> tuple[Color, ...]:
    """Colours written as whitespace-separated `rrggbb` hex triplets, in order."""
    return tuple((int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)) for h in text.split())


def read_id2label(path: str | Path) -> dict[int, str]:
    """The class names of an `id2label.json` file, with integer keys. Each value is a name (`{"0": "road"}`), or
    a name with its colour (`{"0": {"name": "road", "color": "#804080"}}`, see `read_label_colors`).

    Raises:
        DatasetError: the file is not JSON, not a mapping, has keys that are not integers, or an entry that is
            neither form.
    """
    return {class_id: name for class_id, (name, _) in _read_label_file(path).items()}


def read_label_colors(path: str | Path) -> ColorTable | None:
    """The colours of an `id2label.json` whose entries carry them (`{"name": ..., "color": "#rrggbb" or
    [r, g, b]}`), as the table that decodes colour masks; None when no entry has a colour.

    Raises:
        DatasetError: as `read_id2label`, or a colour that cannot be read or is given to two classes.
    """
    colors = [(color, class_id) for class_id, (_, color) in _read_label_file(path).items() if color is not None]
    return ColorTable.parse(colors, str(path)) if colors else None


_ENTRY_KEYS = ("name", "color")


def _read_label_file(path: str | Path) -> dict[int, tuple[str, object]]:
    """class id -> (name, colour as written or None) of an id2label.json file."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: cannot read id2label: {error}") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: expected a mapping of class id to name, found {type(content).__name__}")
    try:
        ids = [int(k) for k in content]
    except ValueError:
        raise DatasetError(
            f"{path}: expected integer class ids as keys, found {listing(list(content), inline=True)}"
        ) from None
    return {class_id: _entry(value, path, key) for class_id, (key, value) in zip(ids, content.items())}


def _entry(value: object, path: str | Path, key: str) -> tuple[str, object]:
    """(name, colour or None) of one id2label.json entry: a name, or {"name": ..., "color": ...}."""
    if not isinstance(value, dict):
        return str(value), None  # names were always read with str(); numbers stay accepted
    if not isinstance(value.get("name"), str) or set(value) - set(_ENTRY_KEYS):
        raise DatasetError(
            f'{path}: class {key}: expected a name, or {{"name": ..., "color": "#rrggbb" or [r, g, b]}}, '
            f"found {json.dumps(value)}"
        )
    return value["name"], value.get("color")


def resolve_id2label(
    recipe_id2label: Mapping[int, str] | None,
    source_id2label: Mapping[int, str] | None,
    num_labels: int | None,
    where: str,
) -> dict[int, str]:
    """Class names: the recipe's, else the source's, else `class_{i}` for `num_labels` classes.

    Raises:
        DatasetError: no names and no `num_labels`; or `num_labels` disagrees with the source's names.
    """
    if recipe_id2label:
        return dict(recipe_id2label)
    if source_id2label:
        if num_labels is not None and num_labels != len(source_id2label):
            raise DatasetError(
                f"data.num_labels is {num_labels} but {where} names {len(source_id2label)} classes; "
                "drop data.num_labels or set data.id2label"
            )
        return dict(source_id2label)
    if num_labels:
        return {i: f"class_{i}" for i in range(num_labels)}
    raise DatasetError(
        f"{where}: no class names found (no id2label.json); set data.id2label, or data.num_labels for class_0.. names"
    )


def label_spec(data: DataConfig, source: Source) -> LabelSpec:
    """The LabelSpec of a source under `data`'s overrides (names, num_labels, ignore index, reduce_labels,
    colours, data.label_map). Colour masks' colours (`data.colors`, else the source's) become the palette, and give the class
    count (`class_0..`) when nothing else names the classes.

    Raises:
        DatasetError: no class names available, names and `num_labels` disagree, or a colour's id is out of range.
    """
    colors = ColorTable.parse(data.colors.items(), "data.colors") if data.colors is not None else source.colors
    num_labels = data.num_labels
    if num_labels is None and not data.id2label and not source.id2label:
        num_labels = _classes_coloured(colors, data.ignore_index)
    id2label = resolve_id2label(data.id2label, source.id2label, num_labels, source.name)
    n = len(id2label)
    palette = tuple(source.palette[:n]) if source.palette and len(source.palette) >= n else ()
    if colors is not None:
        palette = colors.palette(palette or default_palette(n))  # the colours the user gave are the ones shown
    return LabelSpec(
        id2label=id2label,
        palette=palette,
        ignore_index=data.ignore_index,
        reduce_labels=data.reduce_labels or source.reduce_labels,
        label_map=source.label_map,
        strict_label_map=source.strict_label_map,
        colors=colors,
        overrides=data.label_map,
    )


def _classes_coloured(colors: ColorTable | None, ignore_index: int) -> int | None:
    """1 + the highest class id a colour table gives (the ignore index aside); None without one."""
    ids = [i for i in (colors.colors.values() if colors is not None else ()) if i != ignore_index]
    return max(ids) + 1 if ids else None
