"""ADE20K (SceneParse150, 150 classes) from its official folder, or a Parquet copy of it.

    data.source: ade20k          # data.path defaults to data/ADEChallengeData2016

The official download, http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip, unzips to

    ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_*.png

as mmsegmentation and NVlabs/SegFormer read it; images and masks pair by file name. `data.train_split`
`train` or `training` reads the training folders, `data.eval_split` `validation` or `val` the validation
ones. Any other `data.path` (a save_to_disk folder, a parquet file or folder, a Hub id of Parquet files with
`image` and `annotation` columns) takes the hub path. The Hub's own `scene_parse_150` is a loading script,
which datasets >= 4 refuses: segtune says so before calling datasets (see scripts.py).

Masks store 0 for "other" and 1..150 for the classes: `reduce_labels` is always on (0 -> ignore,
k -> k - 1), applied once by the LabelSpec. The 150 class names and colours are those of mmsegmentation's
ADE20KDataset, so no label file has to be downloaded.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from ...errors import DatasetError
from ...recipe import DataConfig
from . import SOURCES
from .base import Source, files_by_stem, pair_by_stem, paired_dataset, report_problems, require_nonempty
from .hub import load_hub
from .scripts import ADE20K_ZIP

# The recipe's split names -> the official folders.
SPLIT_FOLDERS = {"train": "training", "training": "training", "validation": "validation", "val": "validation"}

CLASSES = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)

PALETTE = (
    (120, 120, 120),
    (180, 120, 120),
    (6, 230, 230),
    (80, 50, 50),
    (4, 200, 3),
    (120, 120, 80),
    (140, 140, 140),
    (204, 5, 255),
    (230, 230, 230),
    (4, 250, 7),
    (224, 5, 255),
    (235, 255, 7),
    (150, 5, 61),
    (120, 120, 70),
    (8, 255, 51),
    (255, 6, 82),
    (143, 255, 140),
    (204, 255, 4),
    (255, 51, 7),
    (204, 70, 3),
    (0, 102, 200),
    (61, 230, 250),
    (255, 6, 51),
    (11, 102, 255),
    (255, 7, 71),
    (255, 9, 224),
    (9, 7, 230),
    (220, 220, 220),
    (255, 9, 92),
    (112, 9, 255),
    (8, 255, 214),
    (7, 255, 224),
    (255, 184, 6),
    (10, 255, 71),
    (255, 41, 10),
    (7, 255, 255),
    (224, 255, 8),
    (102, 8, 255),
    (255, 61, 6),
    (255, 194, 7),
    (255, 122, 8),
    (0, 255, 20),
    (255, 8, 41),
    (255, 5, 153),
    (6, 51, 255),
    (235, 12, 255),
    (160, 150, 20),
    (0, 163, 255),
    (140, 140, 140),
    (250, 10, 15),
    (20, 255, 0),
    (31, 255, 0),
    (255, 31, 0),
    (255, 224, 0),
    (153, 255, 0),
    (0, 0, 255),
    (255, 71, 0),
    (0, 235, 255),
    (0, 173, 255),
    (31, 0, 255),
    (11, 200, 200),
    (255, 82, 0),
    (0, 255, 245),
    (0, 61, 255),
    (0, 255, 112),
    (0, 255, 133),
    (255, 0, 0),
    (255, 163, 0),
    (255, 102, 0),
    (194, 255, 0),
    (0, 143, 255),
    (51, 255, 0),
    (0, 82, 255),
    (0, 255, 41),
    (0, 255, 173),
    (10, 0, 255),
    (173, 255, 0),
    (0, 255, 153),
    (255, 92, 0),
    (255, 0, 255),
    (255, 0, 245),
    (255, 0, 102),
    (255, 173, 0),
    (255, 0, 20),
    (255, 184, 184),
    (0, 31, 255),
    (0, 255, 61),
    (0, 71, 255),
    (255, 0, 204),
    (0, 255, 194),
    (0, 255, 82),
    (0, 10, 255),
    (0, 112, 255),
    (51, 0, 255),
    (0, 194, 255),
    (0, 122, 255),
    (0, 255, 163),
    (255, 153, 0),
    (0, 255, 10),
    (255, 112, 0),
    (143, 255, 0),
    (82, 0, 255),
    (163, 255, 0),
    (255, 235, 0),
    (8, 184, 170),
    (133, 0, 255),
    (0, 255, 92),
    (184, 0, 255),
    (255, 0, 31),
    (0, 184, 255),
    (0, 214, 255),
    (255, 0, 112),
    (92, 255, 0),
    (0, 224, 255),
    (112, 224, 255),
    (70, 184, 160),
    (163, 0, 255),
    (153, 0, 255),
    (71, 255, 0),
    (255, 0, 163),
    (255, 204, 0),
    (255, 0, 143),
    (0, 255, 235),
    (133, 255, 0),
    (255, 0, 235),
    (245, 0, 255),
    (255, 0, 122),
    (255, 245, 0),
    (10, 190, 212),
    (214, 255, 0),
    (0, 204, 255),
    (20, 0, 255),
    (255, 255, 0),
    (0, 153, 255),
    (0, 41, 255),
    (0, 255, 204),
    (41, 0, 255),
    (41, 255, 0),
    (173, 0, 255),
    (0, 245, 255),
    (71, 0, 255),
    (122, 0, 255),
    (0, 255, 184),
    (0, 92, 255),
    (184, 255, 0),
    (0, 133, 255),
    (255, 214, 0),
    (25, 194, 194),
    (102, 255, 0),
    (92, 0, 255),
)


def load_ade20k(data: DataConfig, seed: int) -> Source:
    """ADE20K's train and eval splits with its 150 names, its palette and reduce_labels.

    Raises:
        DatasetError: the official folder is missing (with where to download it) or incomplete (missing
            folder, unpaired files, unknown split name, empty split); or as `load_hub` for other paths.
    """
    path = data.path or SOURCES["ade20k"].default_path
    root = Path(path).expanduser()
    if (root / "images").is_dir() or (root / "annotations").is_dir():
        source = _load_folder(root, data)
    elif (root / "ADEChallengeData2016").is_dir():
        raise DatasetError(
            f"data.path {path!r} holds the unzipped ADE20K folder: set data.path to {root / 'ADEChallengeData2016'}"
        )
    elif root.exists() or not _looks_local(path):
        source = load_hub(data, seed, path=path, find_id2label=False)
    else:  # never ask the Hub about a folder that is not there
        raise DatasetError(
            f"data.path {path!r}: ADE20K folder not found. Download {ADE20K_ZIP} and unzip it into "
            f"{str(root.parent)!r} (it holds ADEChallengeData2016/images and ADEChallengeData2016/annotations), "
            "or point data.path at your ADEChallengeData2016 folder"
        )
    source.id2label = dict(enumerate(CLASSES))
    source.palette = PALETTE
    source.reduce_labels = True
    return source


def _looks_local(path: str) -> bool:
    """A path meant as a folder, never a Hub id ("name" or "owner/name")."""
    default = SOURCES["ade20k"].default_path
    return path == default or Path(path).is_absolute() or path.startswith((".", "~")) or path.count("/") > 1


def _load_folder(root: Path, data: DataConfig) -> Source:
    """The splits of an ADEChallengeData2016 folder."""
    skipped: list[str] = []
    splits, problems = {}, []
    for split in (data.train_split, data.eval_split):
        images, masks, found = _pair_split(root, split)
        problems += found
        splits[split] = paired_dataset(images, masks)
    report_problems(problems, data.skip_invalid, skipped, f"{root} (ADE20K)")
    for split, dataset in splits.items():
        require_nonempty(dataset, split, str(root))
    return Source(splits=datasets.DatasetDict(splits), name=str(root), skipped=skipped)


def _pair_split(root: Path, split: str) -> tuple[list[str], list[str], list[str]]:
    folder = SPLIT_FOLDERS.get(split)
    if folder is None:
        raise DatasetError(
            f"{root} (ADE20K): split {split!r} (data.train_split / data.eval_split) has no folder; "
            f"expected one of {list(SPLIT_FOLDERS)}"
        )
    images_dir, masks_dir = root / "images" / folder, root / "annotations" / folder
    for needed in (images_dir, masks_dir):
        if not needed.is_dir():
            raise DatasetError(f"{root} (ADE20K): folder {str(needed)!r} for split {split!r} not found")
    return pair_by_stem(
        files_by_stem(images_dir, (".jpg", ".jpeg", ".png")),
        files_by_stem(masks_dir, (".png",)),
        root,
        f"images/{folder}/{{}}.jpg",
        f"annotations/{folder}/{{}}.png",
    )
