"""Small datasets written inside the tests: image/mask folders, a Cityscapes tree, parquet and save_to_disk."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest

from segtune.recipe import Recipe, load_recipe

# Small crops keep every pipeline test in milliseconds.
TINY_AUGMENT = ["augment.scale=[64,32]", "augment.crop_size=[32,32]"]


def recipe(*overrides: str) -> Recipe:
    """The default recipe with tiny augmentation sizes, then `overrides` (KEY=VALUE)."""
    return load_recipe(None, [*TINY_AUGMENT, *overrides])


def folder_recipe(root, *overrides: str) -> Recipe:
    """`recipe` for a 3-class image/mask folder at `root`."""
    return recipe("data.source=folder", f"data.path={root}", "data.num_labels=3", *overrides)


def scene(seed: int, height: int = 24, width: int = 32, num_labels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 (H, W, 3), mask uint8 (H, W)) with every class present in horizontal bands."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = (np.arange(height)[:, None] * num_labels // height).repeat(width, 1).astype(np.uint8)
    return image, mask


def save(path: Path, array: np.ndarray, mode: str | None = None, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array, mode=mode).save(path, **kwargs) if mode else PIL.Image.fromarray(array).save(
        path, **kwargs
    )
    return path


def palette_png(path: Path, indices: np.ndarray) -> Path:
    """A P-mode mask whose palette colours are NOT the class ids (index 1 is bright red, ...)."""
    image = PIL.Image.fromarray(indices.astype(np.uint8), mode="P")
    colours = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [7, 7, 7] * 252
    image.putpalette(colours)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def sixteen_bit_png(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(values.astype(np.uint16)).save(path)  # mode I;16
    return path


def make_folder(root: Path, layout: str = "split", count: int = 3, num_labels: int = 3) -> Path:
    """An image/mask folder in one of the three layouts: "split" (train/images), "nested" (images/train), "flat"."""
    splits = {"split": ("train", "val"), "nested": ("train", "val"), "flat": (None,)}[layout]
    for split in splits:
        for i in range(count):
            image, mask = scene(i + (100 if split == "val" else 0), num_labels=num_labels)
            if layout == "split":
                images, masks = root / split / "images", root / split / "masks"
            elif layout == "nested":
                images, masks = root / "images" / split, root / "masks" / split
            else:
                images, masks = root / "images", root / "masks"
            save(images / f"img_{i}.png", image)
            save(masks / f"img_{i}.png", mask)
    return root


def make_mixed_folder(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """train/ and val/ with one sample per image kind; returns name -> (expected RGB, expected class ids)."""
    expected = {}
    _, mask = scene(0)
    yy, xx = np.mgrid[0:24, 0:32]
    image = np.stack([yy * 10, xx * 8, 255 - yy * 10], -1).astype(np.uint8)  # smooth, so JPEG stays close
    kinds = {
        "rgb_png": lambda p: save(p.with_suffix(".png"), image),
        "rgba_png": lambda p: save(p.with_suffix(".png"), np.dstack([image, np.full(image.shape[:2], 90, np.uint8)])),
        "grey_png": lambda p: save(p.with_suffix(".png"), image[..., 0]),
        "jpeg": lambda p: save(p.with_suffix(".jpg"), image, quality=95),
    }
    for name, write in kinds.items():
        write(root / "train" / "images" / name)
        save(root / "train" / "masks" / f"{name}.png", mask)
        rgb = {"grey_png": np.repeat(image[..., :1], 3, axis=2)}.get(name, image)
        expected[name] = (rgb, mask)
    # masks in other encodings, paired with plain RGB images
    palette_png(root / "train" / "masks" / "palette_mask.png", mask)
    save(root / "train" / "images" / "palette_mask.png", image)
    expected["palette_mask"] = (image, mask)
    sixteen_bit_png(root / "train" / "masks" / "deep_mask.png", mask)
    save(root / "train" / "images" / "deep_mask.png", image)
    expected["deep_mask"] = (image, mask)
    val_image, val_mask = scene(1)
    save(root / "val" / "images" / "v.png", val_image)
    save(root / "val" / "masks" / "v.png", val_mask)
    return expected


# Cityscapes label ids used by the fake tree, and their train ids (cityscapesscripts' table).
CITYSCAPES_IDS = {0: 255, 1: 255, 7: 0, 8: 1, 11: 2, 26: 13, 33: 18}


def make_cityscapes(
    root: Path, per_split: int = 2, train_ids: bool = False, height: int = 64, width: int = 128
) -> Path:
    """leftImg8bit/{train,val}/<city>/ and gtFine/... with labelIds masks (and labelTrainIds when asked)."""
    rng = np.random.default_rng(0)
    ids = np.array(list(CITYSCAPES_IDS))
    for split in ("train", "val"):
        for i in range(per_split):
            city = "aachen" if i % 2 == 0 else "bremen"
            stem = f"{city}_{i:06d}_000019"
            label_ids = (
                ids[rng.integers(0, len(ids), (height // 8, width // 8))].repeat(8, 0).repeat(8, 1).astype(np.uint8)
            )
            save(
                root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            )
            save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_ids)
            if train_ids:
                mapped = np.vectorize(CITYSCAPES_IDS.get)(label_ids).astype(np.uint8)
                save(root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png", mapped)
    return root


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def hub_dataset(
    count: int = 3,
    label_column: str = "label",
    num_labels: int = 3,
    reduce: bool = False,
    label_feature: datasets.features.FeatureType | None = None,
) -> datasets.DatasetDict:
    """A DatasetDict with `image` and `label_column` Image columns (masks shifted by 1 when `reduce`)."""
    features = datasets.Features(
        {"image": datasets.Image(), label_column: label_feature or datasets.Image(), "scene": datasets.Value("string")}
    )
    splits = {}
    for split, offset in (("train", 0), ("validation", 100)):
        rows = {"image": [], label_column: [], "scene": []}
        for i in range(count):
            image, mask = scene(i + offset, num_labels=num_labels)
            rows["image"].append({"bytes": png_bytes(image), "path": f"{split}_{i}.png"})
            if label_feature is None:
                rows[label_column].append({"bytes": png_bytes(mask + 1 if reduce else mask), "path": None})
            else:
                rows[label_column].append(i)
            rows["scene"].append("street")
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    return datasets.DatasetDict(splits)


def write_parquet(dataset: datasets.DatasetDict, root: Path, id2label: dict[int, str] | None = None) -> Path:
    """One parquet file per split under root/data/, named as the Hub names them."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, part in dataset.items():
        part.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    if id2label is not None:
        (root / "id2label.json").write_text(json.dumps({str(k): v for k, v in id2label.items()}))
    return root


@pytest.fixture(autouse=True)
def isolated_datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the `datasets` arrow cache (synthetic scenes, converted parquet) out of the user's cache."""
    cache = tmp_path_factory.mktemp("datasets_cache")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache
