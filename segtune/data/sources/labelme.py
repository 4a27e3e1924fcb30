"""LabelMe: a folder of images, each with the LabelMe `.json` of its shapes beside it.

    data.source: labelme
    data.path: data/labelme/              root/**/x.jpg + root/**/x.json         split by data.val_ratio
                                          or root/train/** and root/val/** (valid/, validation/)

Each JSON's image is its `imagePath`, relative to the JSON (LabelMe's own convention), else the file of the
JSON's name with an image suffix beside it. Shapes: `polygon` (3 points or more) and `rectangle` (two opposite
corners); any other `shape_type` (circle, line, point, linestrip, mask ...) is refused naming the file and the
type, rather than silently dropped. Labels `_background_` and `background` (LabelMe's own examples use the
former) paint class 0.

Class names: every label of every file, sorted, as 1..N with 0 background, or the recipe's `data.id2label`
(exports.py). The JSON files are rasterised once into the datasets cache (mask_cache.py), with rasterize.py's
overlap rule: smaller shapes on top.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import DatasetError
from ...recipe import DataConfig
from .base import Source
from .exports import (
    ALL,
    BACKGROUND,
    EVAL_NAMES,
    Document,
    Pairs,
    class_ids,
    export_id2label,
    export_source,
    read_document,
)
from .folder import IMAGE_SUFFIXES
from .mask_cache import cached_masks
from .rasterize import Shape, paint, polygon_rle, write_mask

BACKGROUND_LABELS = ("_background_", BACKGROUND)


def load_labelme(data: DataConfig, seed: int) -> Source:
    """The train and eval splits of a LabelMe folder, its masks rasterised (once) into the datasets cache.

    Raises:
        DatasetError: a missing folder or no JSON in it; an unreadable JSON; a polygon of fewer than 3 points,
            a rectangle without 2 points, another shape type; a label outside data.id2label; an image missing
            (unless skip_invalid); no split folders and no data.val_ratio; an empty split.
    """
    root = Path(data.path or "").expanduser()
    if not root.is_dir():
        raise DatasetError(f"data.path {str(root)!r}: LabelMe folder not found")
    files = _json_files(root, data)
    documents = {
        path: read_document(path, "LabelMe JSON", "shapes", "an object with 'shapes', 'imagePath', ...")
        for split_files in files.values()
        for path in split_files
    }
    names = sorted({str(s.get("label")) for d in documents.values() for s in d["shapes"]} - set(BACKGROUND_LABELS))
    classes = class_ids(names, data.id2label, str(root))
    ids = classes | dict.fromkeys(BACKGROUND_LABELS, 0)
    by_name = {path.relative_to(root).as_posix(): path for path in documents}
    settings = {"ids": sorted(ids.items()), "ignore_index": data.ignore_index}
    masks = cached_masks("labelme", by_name, settings, lambda out: _rasterize(root, documents, ids, out))
    listed: dict[str, Pairs] = {}
    problems: list[str] = []
    for split, split_files in files.items():
        listed[split], found = _pairs(root, split_files, documents, masks)
        problems += found
    return export_source(listed, data, root, export_id2label(classes, data.id2label), problems)


def _json_files(root: Path, data: DataConfig) -> dict[str, list[Path]]:
    """split (or ALL) -> the LabelMe JSON files under its folder."""
    train = next((root / n for n in dict.fromkeys((data.train_split, "train")) if (root / n).is_dir()), None)
    evaluation = next((root / n for n in dict.fromkeys((data.eval_split, *EVAL_NAMES)) if (root / n).is_dir()), None)
    folders = {data.train_split: train, data.eval_split: evaluation} if train and evaluation else {ALL: root}
    files = {
        split: sorted(p for p in folder.rglob("*.json") if not p.name.startswith("."))
        for split, folder in folders.items()
    }
    if not any(files.values()):
        raise DatasetError(f"{root}: no LabelMe .json files found (expected one beside each image)")
    return files


def _mask_name(root: Path, path: Path) -> str:
    return path.relative_to(root).with_suffix(".png").as_posix()


def _pairs(root: Path, files: list[Path], documents: Mapping[Path, Document], masks: Path) -> tuple[Pairs, list[str]]:
    """(images, masks) of one split's JSON files, and one problem per image missing."""
    images, labels, problems = [], [], []
    for path in files:
        image = _image_path(path, documents[path])
        if image is None:
            problems.append(f"{path}: image {documents[path].get('imagePath')!r} not found beside it")
            continue
        images.append(str(image))
        labels.append(str(masks / _mask_name(root, path)))
    return (images, labels), problems


def _image_path(path: Path, document: Document) -> Path | None:
    listed = document.get("imagePath")
    candidates = [path.parent / listed, path.parent / Path(listed).name] if listed else []
    candidates += [path.with_suffix(suffix) for suffix in sorted(IMAGE_SUFFIXES)]
    return next((c for c in candidates if c.is_file()), None)


def _rasterize(root: Path, documents: Mapping[Path, Document], ids: Mapping[str, int], out: Path) -> None:
    """One mask PNG per JSON file into `out`, at the JSON's path relative to `root`."""
    for path, document in documents.items():
        height, width = _size(path, document)
        shapes = [_shape(path, shape, ids, height, width) for shape in document["shapes"]]
        write_mask(out / _mask_name(root, path), paint(shapes, height, width))


def _size(path: Path, document: Document) -> tuple[int, int]:
    try:
        return int(document["imageHeight"]), int(document["imageWidth"])
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{path}: expected the image size as 'imageHeight' and 'imageWidth'") from None


def _shape(path: Path, shape: dict[str, Any], ids: Mapping[str, int], height: int, width: int) -> Shape:
    """One LabelMe shape as a Shape of its label's class id."""
    kind, points, label = shape.get("shape_type") or "polygon", shape.get("points") or [], str(shape.get("label"))
    where = f"{path}: shape {label!r} ({kind})"
    if kind == "rectangle":
        if len(points) != 2:
            raise DatasetError(f"{where}: a rectangle needs 2 corner points, found {len(points)}")
        (x0, y0), (x1, y1) = points
        points = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    elif kind != "polygon":
        raise DatasetError(f"{where}: shape type {kind!r} is not supported; draw polygons or rectangles")
    if len(points) < 3:
        raise DatasetError(f"{where}: polygon with {len(points)} points; a polygon needs at least 3")
    return Shape(ids[label], polygon_rle([v for point in points for v in point], height, width))
