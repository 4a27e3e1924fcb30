"""Legends and column headers for the pictures a person looks at: which colour is which class.

    entries = legend_entries(classes_present(mask), id2label, palette)   # [(class id, name, colour), ...]
    picture = with_legend(overlay_image, entries)                         # the picture above a white legend band

Text is drawn with Pillow's default font (scalable in Pillow >= 10.1), black on a white band beside the
picture, never over it, so it reads on any image and leaves the picture's own pixels untouched. Each
class is a swatch of its exact palette colour, outlined in grey so that pale colours still show, then
its name; entries flow left to right and wrap to the picture's width.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Entry = tuple[int, str, tuple[int, int, int]]  # (class id, name, RGB colour)
BACKGROUND, INK, OUTLINE = (255, 255, 255), (0, 0, 0), (128, 128, 128)
FONT_SIZE = 18  # legible at the prediction grid's 256-pixel rows


def classes_present(*masks: np.ndarray | object, num_classes: int, ignore_index: int = 255) -> list[int]:
    """The class ids (0 <= id < `num_classes`, not `ignore_index`) found in any of `masks`, ascending."""
    found: set[int] = set()
    for mask in masks:
        found.update(int(v) for v in np.unique(np.asarray(mask)))
    return sorted(c for c in found if 0 <= c < num_classes and c != ignore_index)


def legend_entries(
    classes: Iterable[int],
    id2label: Mapping[int, str] | None,
    palette: Sequence[Sequence[int]],
    ignored: tuple[int, tuple[int, int, int]] | None = None,
) -> list[Entry]:
    """(id, name, colour) per class, named by `id2label` (the id itself where it has no name); then, if
    `ignored` = (ignore index, colour) is given, an entry "ignored" for the pixels no class is scored on."""
    names = id2label or {}
    entries = [(c, str(names.get(c, c)), tuple(int(v) for v in palette[c])) for c in classes]
    return entries + ([(ignored[0], "ignored", tuple(ignored[1]))] if ignored else [])


def font_size_for(width: int) -> int:
    """A font size that stays legible when a picture `width` pixels wide is fitted to a screen: 18 px up to
    900 px wide, then growing with the width (a 4000 px overlay shown 1000 px wide keeps 18 px text)."""
    return max(FONT_SIZE, min(96, round(width / 50)))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def legend_band(entries: Sequence[Entry], width: int, font_size: int = FONT_SIZE) -> Image.Image:
    """A white band at least `width` pixels wide (wider only if one entry needs it) with a swatch and a name
    per entry, wrapped into lines."""
    font = _font(font_size)
    ascent, descent = font.getmetrics()
    line, pad = ascent + descent, max(4, font_size // 2)
    swatch = font_size
    sizes = [swatch + pad // 2 + round(font.getlength(name)) for _, name, _ in entries]
    width = max([width, *(size + 2 * pad for size in sizes)])
    places, x, y = [], pad, pad
    for size in sizes:
        if x > pad and x + size > width - pad:
            x, y = pad, y + line + pad // 2
        places.append((x, y))
        x += size + 2 * pad
    band = Image.new("RGB", (width, y + line + pad if entries else 0), BACKGROUND)
    draw = ImageDraw.Draw(band)
    for (x, y), (_, name, colour) in zip(places, entries):
        top = y + (line - swatch) // 2
        draw.rectangle((x, top, x + swatch - 1, top + swatch - 1), fill=colour, outline=OUTLINE)
        draw.text((x + swatch + pad // 2, y), name, fill=INK, font=font)
    return band


def legend_image(entries: Sequence[Entry], font_size: int = FONT_SIZE) -> Image.Image:
    """The legend alone, one entry per line (`legend_band` at its narrowest)."""
    return legend_band(entries, width=1, font_size=font_size)


def stack(*pictures: Image.Image) -> Image.Image:
    """Pictures one above the other, left-aligned on white, as wide as the widest."""
    pictures = [p for p in pictures if p.height]
    out = Image.new("RGB", (max(p.width for p in pictures), sum(p.height for p in pictures)), BACKGROUND)
    y = 0
    for picture in pictures:
        out.paste(picture.convert("RGB"), (0, y))
        y += picture.height
    return out


def with_legend(picture: Image.Image, entries: Sequence[Entry], font_size: int | None = None) -> Image.Image:
    """`picture` unchanged at the top left, with the legend band below it (font size from its width by default)."""
    size = font_size or font_size_for(picture.width)
    return stack(picture, legend_band(entries, picture.width, size))


def header_band(titles: Sequence[tuple[str, int, int]], width: int, font_size: int = FONT_SIZE) -> Image.Image:
    """A white band `width` pixels wide with each (title, x1, x2) centred over the columns x1..x2."""
    font = _font(font_size)
    ascent, descent = font.getmetrics()
    pad = max(4, font_size // 3)
    band = Image.new("RGB", (width, ascent + descent + 2 * pad), BACKGROUND)
    draw = ImageDraw.Draw(band)
    for title, x1, x2 in titles:
        draw.text(((x1 + x2) / 2, pad), title, fill=INK, font=font, anchor="ma")  # middle, ascender
    return band
