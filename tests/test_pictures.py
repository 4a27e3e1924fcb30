"""Pictures a person reads: the legend of classes and colours, and the prediction grid's column headers."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as tvF
from torchvision.utils import make_grid

from segtune.legend import classes_present, font_size_for, header_band, legend_band, legend_entries, with_legend
from segtune.visualize import colorize, prediction_grid

PALETTE = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 200, 40)]  # no greys: text never matches them
NAMES = {0: "road", 1: "tree", 2: "sky", 3: "car"}


def exactly(picture, colour) -> int:
    """How many pixels of `picture` have exactly `colour`."""
    return int((np.asarray(picture) == colour).all(-1).sum())


def dark(pixels: np.ndarray) -> bool:
    return bool((pixels.max(-1) < 100).any())


def test_the_legend_lists_exactly_the_classes_present_with_their_names_and_colours():
    mask = np.array([[0, 2, 2], [255, 0, 9]])  # 255 ignored, 9 outside the palette
    assert classes_present(mask, num_classes=4) == [0, 2]
    assert classes_present(mask, np.array([[3]]), num_classes=4) == [0, 2, 3]
    entries = legend_entries([0, 2], NAMES, PALETTE)
    assert entries == [(0, "road", (200, 30, 30)), (2, "sky", (30, 30, 200))]
    assert legend_entries([1], None, PALETTE, ignored=(255, (0, 0, 0))) == [
        (1, "1", (30, 200, 30)),
        (255, "ignored", (0, 0, 0)),
    ]

    band = legend_band(entries, width=300, font_size=18)
    assert band.width == 300 and 18 < band.height < 50  # one line
    # Each swatch: 18 px, a 1-px grey outline around 16 x 16 pixels of the class's exact colour.
    assert [exactly(band, colour) for colour in PALETTE] == [256, 0, 256, 0]
    pixels = np.asarray(band)
    swatches = [int(np.flatnonzero((pixels == PALETTE[c]).all(-1).any(0))[0]) for c in (0, 2)]  # first column
    assert dark(pixels[:, swatches[0] + 20 : swatches[1] - 4]) and dark(pixels[:, swatches[1] + 20 :])  # the names
    assert not dark(pixels[:, : swatches[0] - 1])


def test_a_legend_wraps_to_the_pictures_width_and_widens_only_for_an_entry_that_needs_it():
    entries = legend_entries(range(4), NAMES, PALETTE)
    wide, narrow = legend_band(entries, 600), legend_band(entries, 1)
    assert wide.height < 50 and narrow.height >= wide.height + 3 * 18  # one line; one entry per line
    assert 18 + 20 < narrow.width < 120  # as wide as the longest entry ("road", "tree", "sky", "car")
    assert [exactly(narrow, colour) for colour in PALETTE] == [256] * 4
    assert legend_band([], 50).height == 0


def test_with_legend_keeps_the_picture_and_scales_the_text_with_its_width():
    from PIL import Image

    picture = Image.fromarray(np.full((40, 2000, 3), 77, np.uint8))
    combined = with_legend(picture, legend_entries([3], NAMES, PALETTE))
    assert combined.width == 2000 and np.array_equal(np.asarray(combined)[:40], np.asarray(picture))
    assert font_size_for(2000) == 40 and font_size_for(256) == 18
    assert exactly(combined, PALETTE[3]) == 38 * 38  # a 40-px swatch for 40-px text


def old_grid(samples, height: int) -> np.ndarray:
    """The grid body as segtune drew it before headers and legends (same-aspect images)."""
    rows = []
    for image, label, prediction in samples:
        panels = [
            tvF.resize(image, [height, 2 * height], interpolation=tvF.InterpolationMode.BILINEAR, antialias=True),
            colorize(label, PALETTE).repeat_interleave(2, 1).repeat_interleave(2, 2),
            colorize(prediction, PALETTE).repeat_interleave(2, 1).repeat_interleave(2, 2),
        ]
        rows.append(torch.cat([F.pad(p, (0, 4, 0, 0), value=255) for p in panels], dim=-1))
    return make_grid(torch.stack(rows), nrow=1, padding=4, pad_value=255).permute(1, 2, 0).numpy()


def test_the_prediction_grid_has_column_headers_and_a_legend_of_the_classes_shown():
    generator = torch.Generator().manual_seed(0)
    label = torch.tensor([[0, 1], [255, 1]]).repeat_interleave(16, 0).repeat_interleave(32, 1)  # (32, 64)
    prediction = torch.tensor([[0, 2], [2, 2]]).repeat_interleave(16, 0).repeat_interleave(32, 1)
    samples = [(torch.randint(0, 256, (3, 32, 64), dtype=torch.uint8, generator=generator), label, prediction)] * 2
    grid = np.asarray(prediction_grid(samples, PALETTE, height=64, id2label=NAMES))

    columns = [("image", 4, 132), ("ground truth", 136, 264), ("prediction", 268, 396)]
    header = np.asarray(header_band(columns, 404))
    body = old_grid(samples, 64)
    entries = [(0, "road", PALETTE[0]), (1, "tree", PALETTE[1]), (2, "sky", PALETTE[2]), (255, "ignored", (0, 0, 0))]
    legend = np.asarray(legend_band(entries, 404))
    assert body.shape == (2 * 64 + 3 * 4, 404, 3)
    assert grid.shape == (len(header) + len(body) + len(legend), 404, 3)  # taller by the header and the legend
    np.testing.assert_array_equal(grid[: len(header)], header)
    np.testing.assert_array_equal(grid[len(header) : len(header) + len(body)], body)  # the panels as before
    np.testing.assert_array_equal(grid[len(header) + len(body) :], legend)

    text_row = header[len(header) // 2]  # through the middle of the titles
    assert all(dark(text_row[None, x1:x2]) for _, x1, x2 in columns)
    assert not dark(text_row[None, :4]) and not dark(text_row[None, 396:])
    assert 20 < len(header) < 40 and 20 < len(legend) < 60
    assert exactly(legend, PALETTE[3]) == 0  # "car" is in no label or prediction shown
