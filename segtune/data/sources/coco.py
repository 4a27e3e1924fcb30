"""COCO instance-segmentation JSON (polygons and RLE), as CVAT, Label Studio and Roboflow export it.

    data.source: coco
    data.path: export.json                  one JSON file; split by data.val_ratio
    data.path: cvat_export/                 CVAT "COCO 1.0": annotations/*.json + images/
    data.path: label_studio_export/         Label Studio "COCO": result.json + images/
    data.path: roboflow_export/             Roboflow "COCO Segmentation": {train,valid,test}/_annotations.coco.json
                                            beside the images; train and valid are the splits, test is not read

Images are found relative to their JSON file: `file_name` beside it, under `images/` beside it, or under the
`images/` folder next to its folder (CVAT's annotations/ + images/, with or without a subset folder). CVAT
exports with several JSON files take the one whose name holds the train split's name and the one holding an
eval name (`val`, `valid`, `validation`); a single JSON is split by `data.val_ratio`.

Category ids map, in increasing order, to class ids 1..N, 0 being the background no annotation covers; their
names make the run's id2label (categories sharing a name share a class; see exports.py for `data.id2label`).
Roboflow's unused parent category (the project, named as the other categories' supercategory) is left out.
Each JSON is rasterised once into the datasets cache (mask_cache.py); the overlap and crowd rules are
rasterize.py's: smaller instances on top, `iscrowd` regions painted as the ignore index.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import DatasetError
from ...recipe import DataConfig
from .base import Source
from .exports import ALL, EVAL_NAMES, Document, Pairs, class_ids, export_id2label, export_source, read_document
from .mask_cache import cached_masks
from .rasterize import Shape, check_polygon, paint, polygon_rle, rle_of, write_mask

ROBOFLOW_JSON = "_annotations.coco.json"
LABEL_STUDIO_JSON = "result.json"


def load_coco(data: DataConfig, seed: int) -> Source:
    """The train and eval splits of a COCO export, its masks rasterised (once) into the datasets cache.

    Raises:
        DatasetError: no COCO JSON where `data.path` points; an unreadable JSON; an annotation with a polygon of
            fewer than 3 points, an unknown category or image; an image listed but missing (unless
            skip_invalid); no split and no data.val_ratio; an empty split.
    """
    root = Path(data.path or "").expanduser()
    files = _annotation_files(root, data)
    documents = {
        split: read_document(path, "COCO JSON", "images", "an object with 'images' and 'annotations'")
        for split, path in files.items()
    }
    categories = _categories(documents, files)
    by_name = class_ids(list(dict.fromkeys(categories.values())), data.id2label, str(root))
    ids = {category: by_name[name] for category, name in categories.items()}
    listed: dict[str, Pairs] = {}
    problems: list[str] = []
    for split, path in files.items():
        listed[split], found = _split_pairs(path, documents[split], ids, data.ignore_index)
        problems += found
    return export_source(listed, data, root, export_id2label(by_name, data.id2label), problems)


def _annotation_files(root: Path, data: DataConfig) -> dict[str, Path]:
    """split (or ALL) -> COCO JSON file, for each layout the module docstring lists."""
    if root.is_file():
        return {ALL: root}
    if not root.is_dir():
        raise DatasetError(f"data.path {str(root)!r}: COCO JSON file or export folder not found")
    if (root / "train" / ROBOFLOW_JSON).is_file():
        return _roboflow(root, data)
    if (root / LABEL_STUDIO_JSON).is_file():
        return {ALL: root / LABEL_STUDIO_JSON}
    found = sorted((root / "annotations").glob("*.json"))
    if len(found) == 1:
        return {ALL: found[0]}
    if found:
        return _by_split_name(root, found, data)
    raise DatasetError(
        f"{root}: no COCO export found; expected a JSON file, annotations/*.json + images/ (CVAT), "
        f"{LABEL_STUDIO_JSON} + images/ (Label Studio) or train/{ROBOFLOW_JSON} (Roboflow)"
    )


def _roboflow(root: Path, data: DataConfig) -> dict[str, Path]:
    evaluation = next((root / n / ROBOFLOW_JSON for n in EVAL_NAMES if (root / n / ROBOFLOW_JSON).is_file()), None)
    if evaluation is None:
        return {ALL: root / "train" / ROBOFLOW_JSON}
    return {data.train_split: root / "train" / ROBOFLOW_JSON, data.eval_split: evaluation}


def _by_split_name(root: Path, found: list[Path], data: DataConfig) -> dict[str, Path]:
    """CVAT's one JSON per subset: the train split's and an eval split's, by name."""
    train = [p for p in found if data.train_split.lower() in p.stem.lower()]
    evaluation = [p for p in found if any(n in p.stem.lower() for n in (data.eval_split.lower(), *EVAL_NAMES))]
    evaluation = [p for p in evaluation if p not in train]
    if len(train) != 1 or len(evaluation) != 1:
        names = [p.name for p in found]
        raise DatasetError(
            f"{root / 'annotations'}: {len(found)} JSON files {names}; expected one whose name holds "
            f"{data.train_split!r} and one holding one of {[data.eval_split, *EVAL_NAMES]}, or a single file"
        )
    return {data.train_split: train[0], data.eval_split: evaluation[0]}


def _categories(documents: Mapping[str, Document], files: Mapping[str, Path]) -> dict[int, str]:
    """Category id -> name over every file, in increasing id order, without Roboflow's unused parent.

    Raises:
        DatasetError: one id with two names in different files.
    """
    names: dict[int, str] = {}
    for split, document in documents.items():
        for category in document.get("categories", []):
            cid, name = int(category["id"]), str(category["name"])
            if names.setdefault(cid, name) != name:
                raise DatasetError(f"{files[split]}: category {cid} is {name!r} here and {names[cid]!r} elsewhere")
    used = {int(a["category_id"]) for d in documents.values() for a in d.get("annotations", [])}
    parents = {str(c.get("supercategory")) for d in documents.values() for c in d.get("categories", [])}
    return {cid: names[cid] for cid in sorted(names) if cid in used or names[cid] not in parents}


def _split_pairs(path: Path, document: Document, ids: Mapping[int, int], ignore_index: int) -> tuple[Pairs, list[str]]:
    """The (images, masks) of one JSON file, and one problem per image listed but missing."""
    settings = {"ids": sorted(ids.items()), "ignore_index": ignore_index}
    masks = cached_masks(
        "coco", {path.name: path}, settings, lambda out: _rasterize(path, document, ids, ignore_index, out)
    )
    images, labels, problems = [], [], []
    for image in document["images"]:
        found = _image_path(path, str(image["file_name"]))
        if found is None:
            problems.append(
                f"{path}: image {image['file_name']!r} (id {image['id']}) not found beside it or in an images/ folder"
            )
            continue
        images.append(str(found))
        labels.append(str(masks / f"{image['id']}.png"))
    return (images, labels), problems


def _image_path(json_path: Path, file_name: str) -> Path | None:
    """Where an image of `json_path` lies: beside it, in images/ beside it, or in the images/ folder next to its
    folder (directly or in a subset folder named after the JSON, CVAT's `instances_<subset>.json`)."""
    here, subset = json_path.parent, json_path.stem.removeprefix("instances_")
    for folder in (here, here / "images", here.parent / "images", here.parent / "images" / subset):
        for name in (file_name, Path(file_name).name):
            if (folder / name).is_file():
                return folder / name
    return None


def _rasterize(path: Path, document: Document, ids: Mapping[int, int], ignore_index: int, out: Path) -> None:
    """One mask PNG per image of `document` into `out`, named by image id."""
    sizes = {image["id"]: (int(image["height"]), int(image["width"])) for image in document["images"]}
    shapes: dict[Any, list[Shape]] = {image_id: [] for image_id in sizes}
    for annotation in document.get("annotations", []):
        image_id = annotation.get("image_id")
        if image_id not in sizes:
            raise DatasetError(
                f"{path}: annotation {annotation.get('id')} refers to image {image_id!r}, not in 'images'"
            )
        shapes[image_id] += _shapes(path, annotation, ids, ignore_index, *sizes[image_id])
    for image_id, (height, width) in sizes.items():
        write_mask(out / f"{image_id}.png", paint(shapes[image_id], height, width))


def _shapes(
    path: Path, annotation: dict[str, Any], ids: Mapping[int, int], ignore_index: int, height: int, width: int
) -> list[Shape]:
    """The Shapes of one annotation: each polygon, or its RLE; crowd regions carry the ignore index."""
    where = f"{path}: annotation {annotation.get('id')}"
    category = int(annotation["category_id"])
    if category not in ids:
        raise DatasetError(f"{where}: category_id {category} is not in 'categories' ({sorted(ids)})")
    crowd = bool(annotation.get("iscrowd", 0))
    value = ignore_index if crowd else ids[category]
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, dict):
        return [Shape(value, rle_of(segmentation, height, width), crowd)]
    if not isinstance(segmentation, list):
        raise DatasetError(
            f"{where}: expected a polygon list or an RLE as 'segmentation', found {type(segmentation).__name__}"
        )
    for polygon in segmentation:
        check_polygon(polygon, where)
    return [Shape(value, polygon_rle(polygon, height, width), crowd) for polygon in segmentation]
