"""How a class colour is written: `"#rrggbb"` or three integers 0-255 (`[r, g, b]`).

`data.colors` (and the colours of an `id2label.json`) map such colours to class ids, so that masks saved as
colour images can be decoded (`segtune.data.colors`). Parsing lives here, in pure Python, because recipe
validation must not import `segtune.data` (nor NumPy).
"""

from __future__ import annotations

import string
from collections.abc import Iterable

Color = tuple[int, int, int]

EXPECTED_COLOR = "a hex colour '#rrggbb' or 3 integers 0-255 such as [255, 0, 0]"


def parse_color(value: object) -> Color:
    """`value` as an (r, g, b) triple: "#rrggbb" (any case), a list or tuple of 3 ints, or such a list as text
    ("[255, 0, 0]", "255,0,0": YAML keys and `--set` give text).

    Raises:
        ValueError: "expected <the forms above>, found <value>".
    """
    if isinstance(value, str) and value.strip().startswith("#"):
        digits = value.strip()[1:]
        if len(digits) == 6 and all(c in string.hexdigits for c in digits):
            return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    else:
        parts = value.strip(" []()").replace(",", " ").split() if isinstance(value, str) else value
        channels = _channels(parts)
        if channels is not None:
            return channels
    raise ValueError(f"expected {EXPECTED_COLOR}, found {value!r}")


def to_hex(color: Color) -> str:
    """An (r, g, b) triple as "#rrggbb", the way messages and documents write colours."""
    return "#" + "".join(f"{channel:02x}" for channel in color)


def _channels(parts: object) -> Color | None:
    """Three ints 0-255 (or their decimal text) as a colour; None for anything else (bools included)."""
    if not isinstance(parts, (list, tuple)) or len(parts) != 3:
        return None
    values = []
    for part in parts:
        if isinstance(part, str) and part.isdigit():
            part = int(part)
        if not isinstance(part, int) or isinstance(part, bool) or not 0 <= part <= 255:
            return None
        values.append(part)
    return values[0], values[1], values[2]


def color_problems(
    entries: Iterable[tuple[object, object]], num_labels: int | None, ignore_index: int, key: str
) -> list[str]:
    """One line per invalid (colour, class id) entry of the colours named `key` (e.g. "data.colors"); pairs, not
    a mapping, so that a colour two classes of an id2label.json both give is seen twice.

    An entry is invalid when its colour cannot be read, when the same colour was listed before (in another
    spelling: "#FF0000" and [255, 0, 0]), or when its id is neither a class id (below `num_labels`, when
    known) nor `ignore_index`.
    """
    problems, seen, entries = [], {}, list(entries)
    if not entries:
        return [f"{key}: expected at least one colour -> class id entry, found none"]
    for entry, class_id in entries:
        try:
            color = parse_color(entry)
        except ValueError as error:
            problems.append(f"{key}: entry {entry!r}: {error}")
            continue
        if color in seen:
            problems.append(
                f"{key}: entry {entry!r} lists colour {list(color)} again (first as {seen[color]!r}); "
                "expected each colour once"
            )
        seen.setdefault(color, entry)
        problems += _id_problems(f"{key}: entry {entry!r}", class_id, num_labels, ignore_index)
    return problems


def _id_problems(where: str, class_id: object, num_labels: int | None, ignore_index: int) -> list[str]:
    valid = isinstance(class_id, int) and not isinstance(class_id, bool)
    if valid and (class_id == ignore_index or (class_id >= 0 and (num_labels is None or class_id < num_labels))):
        return []
    classes = f"in [0, {num_labels})" if num_labels is not None else ">= 0"
    return [f"{where}: expected a class id {classes} or the ignore index {ignore_index}, found {class_id!r}"]
