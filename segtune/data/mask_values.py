"""What a split's masks hold, read from all of them or from a seeded sample: raw values, their pixels, the masks
they occur in, the files that hold values without a class, and colour masks with their colours.

    values = MaskValues("train", len(split), labels)
    values.add(raw, "mask ('masks/a.png')", "train sample 0")     # one decoded raw mask (H, W)
    values.class_pixels()                                        # (num_labels,) pixels of each class (valid masks)

`diagnosis.diagnose` reads these tallies; `preflight` fills them, sample by sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .labels import INVALID, LUT_SIZE, LabelSpec

# A split of up to SAMPLE_ALL masks is read whole; a larger one through a seeded sample of SAMPLE_SIZE. The
# mistakes the diagnosis stops on (scaled ids, 0/255 binary masks, colour masks) are in every mask, so any one
# shows them; a class in 1% of the masks is still seen with probability 1 - 0.99**300 = 95%. 300 Cityscapes-size
# masks decode in about 4 s on one core, so a run of any size starts in seconds (bench/check_speed.py).
SAMPLE_ALL = 500
SAMPLE_SIZE = 300
# Files named per raw value, and colour masks whose colours are listed (each costs a np.unique of its pixels).
_EXAMPLES = 3
_COLOUR_MASKS_READ = 8


def sampled(count: int, level: str, seed: int) -> np.ndarray:
    """The sorted indices of the masks `data.check=level` decodes in a split of `count` samples."""
    if level == "full" or count <= SAMPLE_ALL:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, SAMPLE_SIZE, replace=False))


@dataclass
class MaskValues:
    """Tallies of the masks decoded from one split.

    Attributes:
        split: the split's name; `samples`: how many samples it has; `masks`: how many masks were decoded.
        pixels, masks_with: raw value -> pixels, and -> masks holding it (65536 entries each), of every mask.
        valid_pixels: raw value -> pixels of the masks whose every value has a train id (the class tallies').
        class_masks: (num_labels,) masks each class occurs in (of those masks).
        examples: raw value -> up to 3 files holding it.
        problems: (line, about_values) per sample, in order; `about_values` marks values without a train id.
        colour_files: colour masks; `colours`: packed 0xRRGGBB -> pixels, from the first few of them.
    """

    split: str
    samples: int
    labels: LabelSpec
    masks: int = 0
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(LUT_SIZE, np.int64))
    masks_with: np.ndarray = field(default_factory=lambda: np.zeros(LUT_SIZE, np.int64))
    valid_pixels: np.ndarray = field(default_factory=lambda: np.zeros(LUT_SIZE, np.int64))
    class_masks: np.ndarray | None = None
    examples: dict[int, list[str]] = field(default_factory=dict)
    problems: list[tuple[str, bool]] = field(default_factory=list)
    colour_files: list[str] = field(default_factory=list)
    colours: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.class_masks is None:
            self.class_masks = np.zeros(self.labels.num_labels, np.int64)

    def add(self, raw: np.ndarray, mask_name: str, where: str) -> None:
        """Tally one decoded raw mask (H, W); values without a train id become a problem line naming the file.

        Raises:
            DatasetError: the mask is not integer, or holds values outside 0..65535.
        """
        values, counts = self.labels.raw_histogram(raw, mask_name)
        self.masks += 1
        self.pixels[values] += counts
        self.masks_with[values] += 1
        for value in values.tolist():
            files = self.examples.setdefault(value, [])
            if len(files) < _EXAMPLES:
                files.append(mask_name)
        ids = self.labels.lut[values]
        bad = values[ids == INVALID]
        if bad.size:  # an invalid sample: in the diagnosis, but not in the class tallies (training skips it)
            self.problems.append((f"{where}: {self.labels.invalid_message(bad, mask_name)}", True))
            return
        self.valid_pixels[values] += counts
        self.class_masks[np.unique(ids[(ids >= 0) & (ids < self.labels.num_labels)])] += 1

    def add_colour_mask(self, rgb: np.ndarray, mask_name: str) -> None:
        """Tally a colour mask (its (H, W, 3) pixels, channels differing), reading the colours of the first few."""
        if len(self.colour_files) < _COLOUR_MASKS_READ:
            packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
            colours, counts = np.unique(packed, return_counts=True)
            for colour, count in zip(colours.tolist(), counts.tolist()):
                self.colours[colour] = self.colours.get(colour, 0) + count
        self.colour_files.append(mask_name)

    def class_pixels(self) -> np.ndarray:
        """(num_labels,) pixels of each class, through the label contract's lookup table."""
        ids, n = self.labels.lut, self.labels.num_labels
        keep = (ids >= 0) & (ids < n) & (self.valid_pixels > 0)
        return np.bincount(ids[keep], weights=self.valid_pixels[keep], minlength=n).astype(np.int64)

    def ignored_pixels(self) -> int:
        """Pixels the label contract maps to the ignore index."""
        return int(self.valid_pixels[self.labels.lut == self.labels.ignore_index].sum())

    def other_problems(self) -> list[str]:
        return [line for line, about_values in self.problems if not about_values]
