"""The sliding window in bands of rows: class indices of images of any size, in memory that does not grow
with the image's height.

    for labels in slide_bands(windows, pixels, logits, height, width, window_batch):   # (n, W) int64 each
        ...

`slide_bands` gives exactly the labels of `inference.slide_logits` followed by an argmax, band after
band from the top:

- the same windows (`inference.window_grid`, mmseg's grid: the last window of each axis shifted back
  inside the image; an image smaller than the window along an axis gets one window of its own size
  there), run through the model in the same batches of `window_batch`, in the same order;
- each pixel's logits summed in the same (window) order, starting from zero, then divided by the same
  count of windows covering it: the same float32 operations on the same values, hence the same bits,
  and an argmax that breaks ties the same way.

Only the rows not yet final are kept. Windows come row by row, top to bottom, so when a window starting
at row y1 comes, no window still to come covers a row above y1: those rows are final, and leave as
class indices before the window is added. What is kept is therefore at most one window's height of
rows, (K, crop height, W) float32, whatever the image's height.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

Window = tuple[int, int, int, int]  # (y1, y2, x1, x2), as inference.window_grid gives them
# Logits are divided and reduced to labels this many rows at a time: the temporary stays small.
_EMIT_BYTES = 64 * 2**20


class RowAccumulator:
    """Sums of window logits over the rows not yet final, in a ring of `capacity` rows of (K, capacity, W).

    `add` sums a window's logits into its rows; `emit(until)` turns the rows above `until` into class
    indices and frees them. A window must not reach more than `capacity` rows below the first row not yet
    emitted (true when `capacity` is the windows' height and everything above each window was emitted).
    """

    def __init__(self, num_labels: int, capacity: int, windows: Sequence[Window], device: torch.device) -> None:
        width = max(x2 for _, _, _, x2 in windows)
        self.total = torch.zeros(num_labels, capacity, width, device=device)  # (K, ring rows, W)
        self.capacity, self.top = capacity, 0
        # The count of windows covering (y, x) is (window rows covering y) x (window columns covering x), the
        # grid being the product of its row and column spans: two vectors, exact small integers in float32.
        spans = torch.tensor(sorted({(y1, y2) for y1, y2, _, _ in windows}), device=device)  # (R, 2)
        self._row_spans = spans
        columns = torch.arange(width, device=device)
        self._column_cover = torch.zeros(width, device=device)
        for x1, x2 in sorted({(x1, x2) for _, _, x1, x2 in windows}):
            self._column_cover += ((columns >= x1) & (columns < x2)).float()

    def _ring(self, y1: int, y2: int) -> Iterator[tuple[int, int, int]]:
        """(ring row, row offset from y1, rows) pieces of rows [y1, y2), split where the ring wraps."""
        while y1 < y2:
            start = y1 % self.capacity
            rows = min(y2 - y1, self.capacity - start)
            yield start, y1, rows
            y1 += rows

    def add(self, window: Window, scores: torch.Tensor) -> None:
        """Sum `scores` (K, y2 - y1, x2 - x1) into the window's rows and columns."""
        y1, y2, x1, x2 = window
        if y1 < self.top or y2 - self.top > self.capacity:
            raise ValueError(f"window rows {y1}..{y2} outside the rows kept, {self.top}..{self.top + self.capacity}")
        for start, y, rows in self._ring(y1, y2):
            self.total[:, start : start + rows, x1:x2] += scores[:, y - y1 : y - y1 + rows]

    def emit(self, until: int) -> Iterator[torch.Tensor]:
        """Class indices (n, W) int64 of the rows from the first not yet emitted to `until`, a few at a time;
        their sums are zeroed for the rows to come."""
        block = max(1, _EMIT_BYTES // (self.total.shape[0] * self.total.shape[2] * 4))
        for start, y, rows in self._ring(self.top, until):
            for offset in range(0, rows, block):
                n = min(block, rows - offset)
                ring = slice(start + offset, start + offset + n)
                lines = torch.arange(y + offset, y + offset + n, device=self.total.device)[:, None]  # (n, 1)
                row_cover = ((lines >= self._row_spans[:, 0]) & (lines < self._row_spans[:, 1])).sum(1).float()
                count = row_cover[:, None] * self._column_cover  # (n, W): as slide_logits' count
                yield (self.total[:, ring] / count).argmax(0)
                self.total[:, ring] = 0
        self.top = max(self.top, until)


def slide_bands(
    windows: Sequence[Window],
    pixels: Callable[[Window], torch.Tensor],
    logits: Callable[[torch.Tensor], torch.Tensor],
    height: int,
    window_batch: int = 4,
) -> Iterator[torch.Tensor]:
    """Class indices of the image, (n, W) int64 bands from the top (all rows, in order), as the rows become final.

    `windows` is `window_grid(height, width, crop, stride)`; `pixels(window)` gives its (1, 3, h, w) model input;
    `logits` maps a batch of crops (N, 3, h, w) to (N, K, h, w) fp32 logits at crop size (`whole_logits`).
    Windows go through `logits` in batches of `window_batch`, as `slide_logits` batches them.
    """
    accumulator = None
    for start in range(0, len(windows), window_batch):
        chunk = windows[start : start + window_batch]
        scores = logits(torch.cat([pixels(window) for window in chunk]))  # (n, K, h, w)
        if accumulator is None:
            capacity = max(y2 - y1 for y1, y2, _, _ in windows)
            accumulator = RowAccumulator(scores.shape[1], capacity, windows, scores.device)
        for window, score in zip(chunk, scores):
            yield from accumulator.emit(window[0])  # no window to come covers the rows above this one's top
            accumulator.add(window, score)
    if accumulator is not None:
        yield from accumulator.emit(height)
