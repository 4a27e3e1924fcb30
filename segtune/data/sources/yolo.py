"""Ultralytics YOLO segmentation: `data.yaml` with `names` and split folders, one `labels/**.txt` per image.

    data.source: yolo
    data.path: data/yolo/data.yaml        (or the folder holding data.yaml)

    data.yaml   path: .   train: images/train   val: images/val   names: {0: cat, 1: dog}  (or a list)
    images/train/x.jpg    labels/train/x.txt    one line per polygon: `class x1 y1 x2 y2 ...` normalised to 0..1

`train` and `val` are folders (or lists of folders, or .txt files listing images), relative to `path`, itself
relative to data.yaml's folder; Roboflow's `../train/images` is also found inside the export. An image's labels
are the file at its path with the last `images` folder replaced by `labels` and the suffix by `.txt`, as
Ultralytics reads them; an image without one is all background, as in Ultralytics.

YOLO class k becomes class k + 1, background being 0 (or the recipe's `data.id2label`, by name: exports.py).
The label files (and the images' sizes, which scale the normalised points) are rasterised once into the
datasets cache (mask_cache.py), with rasterize.py's overlap rule: smaller shapes on top.
"""

from __future__ import annotations

from pathlib import Path

import PIL.Image
import yaml

from ...errors import DatasetError
from ...recipe import DataConfig
from .base import Source
from .exports import Pairs, class_ids, export_id2label, export_source
from .folder import IMAGE_SUFFIXES
from .mask_cache import cached_masks
from .rasterize import Shape, check_polygon, paint, polygon_rle, write_mask

DATA_YAML = "data.yaml"
Sample = tuple[Path, Path, tuple[int, int]]  # (image, label file, (height, width))


def load_yolo(data: DataConfig, seed: int) -> Source:
    """The train and val splits of a YOLO segmentation dataset, its masks rasterised (once) into the cache.

    Raises:
        DatasetError: no data.yaml, or one without `names`, `train` or `val`; a split folder missing; a polygon
            of fewer than 3 points or a class outside `names` (naming the file and line); an image listed but
            missing or unreadable (unless skip_invalid); an empty split.
    """
    config_path = _config_path(Path(data.path or "").expanduser())
    config = _read(config_path)
    names = _names(config, config_path)
    by_name = class_ids(names, data.id2label, str(config_path))
    ids = [by_name[name] for name in names]
    base = config_path.parent / str(config.get("path") or ".")
    listed: dict[str, Pairs] = {}
    problems: list[str] = []
    samples: dict[str, list[Sample]] = {}
    for split, key in ((data.train_split, "train"), (data.eval_split, "val")):
        samples[split] = _samples(config_path, base, config.get(key), key, problems)
    every = [sample for split_samples in samples.values() for sample in split_samples]
    labels = {_relative_name(base, label): label for _, label, _ in every if label.is_file()}
    settings = {
        "ids": ids,
        "ignore_index": data.ignore_index,
        "sizes": sorted((_mask_name(base, i), s) for i, _, s in every),
    }
    masks = cached_masks("yolo", labels, settings, lambda out: _rasterize(base, every, ids, out))
    for split, split_samples in samples.items():
        listed[split] = (
            [str(i) for i, _, _ in split_samples],
            [str(masks / _mask_name(base, i)) for i, _, _ in split_samples],
        )
    return export_source(listed, data, config_path.parent, export_id2label(by_name, data.id2label), problems)


def _config_path(path: Path) -> Path:
    config = path / DATA_YAML if path.is_dir() else path
    if not config.is_file():
        raise DatasetError(f"data.path {str(path)!r}: YOLO {DATA_YAML} not found")
    return config


def _read(path: Path) -> dict:
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise DatasetError(f"{path}: cannot read YOLO data.yaml: {error}") from None
    if not isinstance(config, dict):
        raise DatasetError(f"{path}: expected a mapping with 'names', 'train' and 'val'")
    return config


def _names(config: dict, path: Path) -> list[str]:
    """Class names in YOLO id order, from a list or an {id: name} mapping with ids 0..N-1."""
    names = config.get("names")
    if isinstance(names, dict) and sorted(int(k) for k in names) == list(range(len(names))):
        return [str(names[k]) for k in sorted(names, key=int)]
    if isinstance(names, list) and names:
        return [str(name) for name in names]
    raise DatasetError(f"{path}: 'names' must list the classes (a list, or a mapping of ids 0..N-1), found {names!r}")


def _samples(config_path: Path, base: Path, entry: object, key: str, problems: list[str]) -> list[Sample]:
    """The (image, label file, size) of one split entry; unreadable images go to `problems`."""
    if not entry:
        raise DatasetError(f"{config_path}: no {key!r} entry (the {key} split's image folder)")
    samples = []
    for image in _images(config_path, base, entry, key, problems):
        try:
            with PIL.Image.open(image) as opened:
                width, height = opened.size
        except (OSError, ValueError) as error:
            problems.append(f"{image}: cannot read image: {error}")
            continue
        samples.append((image, _label_path(image), (height, width)))
    return samples


def _images(config_path: Path, base: Path, entry: object, key: str, problems: list[str]) -> list[Path]:
    images = []
    for item in entry if isinstance(entry, list) else [entry]:
        found = next((p for p in (base / str(item), base / str(item).removeprefix("../")) if p.exists()), None)
        if found is None:
            raise DatasetError(f"{config_path}: {key} folder {str(item)!r} not found (relative to {str(base)!r})")
        if found.is_dir():
            images += sorted(
                p for p in found.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            continue
        for line in found.read_text().splitlines():  # a .txt listing images, relative to the base
            if line.strip():
                image = base / line.strip()  # an absolute path stays itself
                if image.is_file():
                    images.append(image)
                else:
                    problems.append(f"{found}: image {line.strip()!r} listed but missing")
    return images


def _label_path(image: Path) -> Path:
    """Ultralytics' rule: the last `images` folder of the path becomes `labels`, the suffix `.txt`."""
    parts = list(image.parts)
    index = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
    if index is not None:
        parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def _mask_name(base: Path, image: Path) -> str:
    return (image.relative_to(base) if image.is_relative_to(base) else Path(image.name)).with_suffix(".png").as_posix()


def _relative_name(base: Path, path: Path) -> str:
    """A label file's name in the cache key: relative to the base, or its whole path when it lies elsewhere (an
    absolute path in a `.txt` image list)."""
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def _rasterize(base: Path, samples: list[Sample], ids: list[int], out: Path) -> None:
    """One mask PNG per image into `out`, at its path relative to the base."""
    for image, label, (height, width) in samples:
        shapes = _shapes(label, ids, height, width) if label.is_file() else []
        write_mask(out / _mask_name(base, image), paint(shapes, height, width))


def _shapes(label: Path, ids: list[int], height: int, width: int) -> list[Shape]:
    """The polygons of one label file, scaled from 0..1 to pixels."""
    shapes = []
    for number, line in enumerate(label.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label}, line {number}"
        try:
            yolo_class, values = int(fields[0]), [float(v) for v in fields[1:]]
        except ValueError:
            raise DatasetError(f"{where}: expected `class x1 y1 x2 y2 ...` numbers, found {line.strip()!r}") from None
        if not 0 <= yolo_class < len(ids):
            raise DatasetError(f"{where}: class {yolo_class} is outside names (0..{len(ids) - 1})")
        check_polygon(values, where)
        points = [v * (width if i % 2 == 0 else height) for i, v in enumerate(values)]
        shapes.append(Shape(ids[yolo_class], polygon_rle(points, height, width)))
    return shapes
