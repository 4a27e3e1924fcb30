"""Labelling-tool exports written inside the tests: COCO (CVAT, Label Studio, Roboflow), LabelMe, YOLO, VOC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils

from tests.conftest import TINY_RUN
from tests.data_fixtures import save

SIZE = 64  # images are SIZE x SIZE: TINY_RUN's crop


def image(path: Path, seed: int = 0) -> Path:
    """An RGB PNG of SIZE x SIZE random pixels."""
    return save(path, np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))


def rect(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    """A rectangle as a flat COCO polygon."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def compressed_rle(mask: np.ndarray) -> dict:
    """COCO's compressed RLE (counts a string, as in JSON files) of a boolean (H, W) mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode()}


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (counts a list of run lengths, column-major, starting with zeros)."""
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


# Two categories with non-contiguous ids: 3 -> class 1, 7 -> class 2.
CATEGORIES = [{"id": 3, "name": "cat", "supercategory": "animal"}, {"id": 7, "name": "dog", "supercategory": "animal"}]


def coco_document(file_names: list[str], annotations_per_image=None) -> dict:
    """A COCO document of SIZE x SIZE images; each gets one "cat" band and one "dog" band unless given."""
    images = [{"id": i + 1, "file_name": name, "height": SIZE, "width": SIZE} for i, name in enumerate(file_names)]
    annotations = []
    for entry in images:
        listed = (annotations_per_image or {}).get(entry["id"])
        if listed is None:
            listed = [
                {"category_id": 3, "segmentation": [rect(0, 0, SIZE, SIZE // 2)]},
                {"category_id": 7, "segmentation": [rect(0, SIZE // 2, SIZE, SIZE * 3 // 4)]},
            ]
        for annotation in listed:
            annotations.append({"id": len(annotations) + 1, "image_id": entry["id"], "iscrowd": 0, **annotation})
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def write_json(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def make_coco_file(root: Path, count: int = 4) -> Path:
    """root/export.json with its images beside it."""
    names = [f"img_{i}.png" for i in range(count)]
    for i, name in enumerate(names):
        image(root / name, i)
    return write_json(root / "export.json", coco_document(names))


def make_cvat(root: Path, count: int = 4) -> Path:
    """CVAT "COCO 1.0": annotations/instances_default.json + images/."""
    names = [f"frame_{i:06d}.png" for i in range(count)]
    for i, name in enumerate(names):
        image(root / "images" / name, i)
    write_json(root / "annotations" / "instances_default.json", coco_document(names))
    return root


def make_label_studio(root: Path, count: int = 4) -> Path:
    """Label Studio "COCO": result.json + images/, file names relative to the JSON ("images/...")."""
    names = [f"images/task_{i}.png" for i in range(count)]
    for i, name in enumerate(names):
        image(root / name, i)
    write_json(root / "result.json", coco_document(names))
    return root


def make_roboflow(root: Path, count: int = 3) -> Path:
    """Roboflow "COCO Segmentation": {train,valid,test}/_annotations.coco.json beside the images, with
    Roboflow's unused parent category (id 0, named as the others' supercategory)."""
    for offset, split in enumerate(("train", "valid", "test")):
        names = [f"{split}_{i}.jpg.rf.abc.png" for i in range(count)]
        for i, name in enumerate(names):
            image(root / split / name, 10 * offset + i)
        document = coco_document(names)
        document["categories"] = [{"id": 0, "name": "animal", "supercategory": "none"}, *CATEGORIES]
        write_json(root / split / "_annotations.coco.json", document)
    return root


def tiny_run(output_dir: Path, *overrides: str) -> list[str]:
    """TINY_RUN's overrides for a demo-recipe run on a source, writing to `output_dir`."""
    return [*TINY_RUN, f"train.output_dir={output_dir}", "train.max_steps=2", *overrides]


def labelme_shape(label: str, points: list[list[float]], shape_type: str = "polygon") -> dict:
    return {"label": label, "points": points, "shape_type": shape_type, "group_id": None, "flags": {}}


def labelme_file(image_path: Path, shapes: list[dict]) -> Path:
    """The LabelMe JSON of `image_path`, beside it, as LabelMe 5 writes it."""
    document = {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path.name,
        "imageData": None,
        "imageHeight": SIZE,
        "imageWidth": SIZE,
    }
    return write_json(image_path.with_suffix(".json"), document)


def make_labelme(root: Path, count: int = 4) -> Path:
    """Images with a "road" rectangle (bottom half) and a "car" polygon (a triangle) in it, JSON beside each."""
    for i in range(count):
        path = image(root / f"sub{i % 2}" / f"shot_{i}.png", i)
        labelme_file(
            path,
            [
                labelme_shape("road", [[0, SIZE / 2], [SIZE, SIZE]], "rectangle"),
                labelme_shape("car", [[8, 40], [40, 40], [8, 60]]),
            ],
        )
    return root


def make_yolo(root: Path, count: int = 3, names_as_list: bool = False) -> Path:
    """An Ultralytics segmentation dataset: data.yaml, images/{train,val}, labels/{train,val}; returns data.yaml.

    Each image: class 0 ("cat") over the top half, class 1 ("dog") a triangle in the bottom half; the last
    image of each split has no label file (background only).
    """
    names = ["cat", "dog"]
    for split in ("train", "val"):
        for i in range(count):
            image(root / "images" / split / f"{split}_{i}.png", i + (50 if split == "val" else 0))
            if i == count - 1:
                continue
            label = root / "labels" / split / f"{split}_{i}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("0 0 0 1 0 1 0.5 0 0.5\n1 0.125 0.625 0.625 0.625 0.125 0.9375\n")
    listing = (
        "\n".join(f"  - {n}" for n in names) if names_as_list else "\n".join(f"  {i}: {n}" for i, n in enumerate(names))
    )
    config = root / "data.yaml"
    config.write_text(f"path: .\ntrain: images/train\nval: images/val\nnames:\n{listing}\n")
    return config


def make_voc(root: Path, per_split: int = 3) -> Path:
    """VOCdevkit/VOC2012 as the tar unpacks: JPEG images, palette masks (a class band with a 255 outline), lists."""
    import PIL.Image

    from segtune.data.labels import default_palette

    voc = root / "VOCdevkit" / "VOC2012"
    palette = [c for colour in default_palette(256) for c in colour]
    for split in ("train", "val"):
        names = [f"2007_{split}_{i:03d}" for i in range(per_split)]
        for i, name in enumerate(names):
            save(voc / "JPEGImages" / f"{name}.jpg", np.full((SIZE, SIZE, 3), 40 * i, np.uint8))
            mask = np.zeros((SIZE, SIZE), np.uint8)
            mask[16:48, 16:48] = 15 + i  # person, pottedplant, sheep
            mask[15, 15:49] = 255  # the boundary VOC draws around objects
            indexed = PIL.Image.fromarray(mask, mode="P")
            indexed.putpalette(palette)
            (voc / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            indexed.save(voc / "SegmentationClass" / f"{name}.png")
        lists = voc / "ImageSets" / "Segmentation"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return root


def count_paints(monkeypatch, module) -> list[int]:
    """A list that grows by one each time `module` rasterises an image (its `paint`), which still runs."""
    painted: list[int] = []
    real_paint = module.paint
    monkeypatch.setattr(module, "paint", lambda *args, **kwargs: painted.append(1) or real_paint(*args, **kwargs))
    return painted
