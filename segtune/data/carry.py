"""A sample's DatasetError, carried from a DataLoader worker to the main process as data.

A DatasetError raised inside a worker would reach the main process wrapped in torch's worker traceback.
`CarryErrors` returns its one-line message in place of the item instead (`{"error": message}`), the
collate functions pass it on as the batch, and the consumer raises it where the user sees it
(`raise_carried_error`), naming the file.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from ..errors import DatasetError

ERROR_KEY = "error"


class CarryErrors(Dataset):
    """`dataset`, with a DatasetError of an item returned as `{"error": message}` instead of raised."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int) -> Any:
        try:
            return self.dataset[key]
        except DatasetError as error:
            return {ERROR_KEY: str(error)}


def carried(samples: list) -> dict[str, str] | None:
    """The batch to hand over in place of `samples` when one of them carries an error, else None."""
    errors = [s[ERROR_KEY] for s in samples if isinstance(s, dict) and ERROR_KEY in s]
    return {ERROR_KEY: errors[0]} if errors else None


def raise_carried_error(batch: dict) -> None:
    """Raise, in the main process, the DatasetError a DataLoader worker carried in `batch` instead of raising.

    Raises:
        DatasetError: with the worker's one-line message (naming the file), when the batch carries one.
    """
    if ERROR_KEY in batch:
        raise DatasetError(batch[ERROR_KEY])
