"""Pascal VOC 2012 segmentation (21 classes) as its tar unpacks, read as mmsegmentation's PascalVOCDataset.

    data.source: voc             # data.path defaults to data/VOCdevkit/VOC2012 (a VOCdevkit/ or its parent works too)

    VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt    one image id per line
    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png                         palette PNGs: the palette index is the class id

`data.train_split` and `data.eval_split` name the list files (`validation` reads val.txt). Masks hold 0
(background) to 20, and 255 on object boundaries and "difficult" regions, which is ignored, as in the
benchmark and mmseg (with another `data.ignore_index`, 255 still maps to it; any other value is refused).
Download: http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DatasetError
from ...recipe import DataConfig
from ..labels import default_palette
from .base import Source, paired_splits

CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
BOUNDARY = 255  # VOC's own "void" value on object outlines
SPLIT_FILES = {"validation": "val"}  # the recipe's default eval split name -> VOC's list file
DOWNLOAD = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"


def load_voc(data: DataConfig, seed: int) -> Source:
    """VOC 2012's train and eval splits from their list files, with the 21 class names and VOC's palette
    (`seed` is unused: fixed splits).

    Raises:
        DatasetError: the folder is not found (with where to download it); a split has no list file; an image
            or mask the list names is missing (unless skip_invalid); an empty split.
    """
    root = _voc_root(Path(data.path or "").expanduser())
    listed = {split: _list_split(root, split) for split in (data.train_split, data.eval_split)}
    splits, skipped = paired_splits(listed, data.skip_invalid, root, "Pascal VOC")
    # raw 255 is VOC's void: only another ignore index needs a map (the identity map keeps the fast path)
    label_map = None if data.ignore_index == BOUNDARY else {i: i for i in range(len(CLASSES))} | {BOUNDARY: -1}
    return Source(
        splits=splits,
        name=str(root),
        id2label=dict(enumerate(CLASSES)),
        palette=default_palette(len(CLASSES)),  # VOC's own bit-interleaved palette
        label_map=label_map,
        strict_label_map=label_map is not None,
        skipped=skipped,
    )


def _voc_root(path: Path) -> Path:
    """The VOC2012 folder at `path`, `path/VOC2012` or `path/VOCdevkit/VOC2012`."""
    for root in (path, path / "VOC2012", path / "VOCdevkit" / "VOC2012"):
        if (root / "ImageSets" / "Segmentation").is_dir():
            return root
    raise DatasetError(
        f"data.path {str(path)!r}: Pascal VOC 2012 folder (VOCdevkit/VOC2012 with ImageSets/Segmentation) not found. "
        f"Download {DOWNLOAD}, unpack it, then point data.path at VOCdevkit/VOC2012"
    )


def _list_split(root: Path, split: str) -> tuple[list[str], list[str], list[str]]:
    """(images, masks, problems) of the ids in `ImageSets/Segmentation/<split>.txt`."""
    list_file = root / "ImageSets" / "Segmentation" / f"{SPLIT_FILES.get(split, split)}.txt"
    if not list_file.is_file():
        available = sorted(p.stem for p in list_file.parent.glob("*.txt"))
        raise DatasetError(f"{list_file}: split {split!r} has no list file; found {available}")
    images, masks, problems = [], [], []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        image, mask = root / "JPEGImages" / f"{name}.jpg", root / "SegmentationClass" / f"{name}.png"
        missing = [str(p.relative_to(root)) for p in (image, mask) if not p.is_file()]
        if missing:
            problems.append(f"{list_file.name}, line {number}: {name!r} lists {' and '.join(missing)}, not found")
            continue
        images.append(str(image))
        masks.append(str(mask))
    return images, masks, problems
