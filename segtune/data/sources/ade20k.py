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

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ...errors import DatasetError
from ...recipe import DATA_SOURCES, DataConfig
from ..labels import palette_from_hex
from .base import Source, files_by_stem, official_split_folder, pair_by_stem, paired_splits
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

PALETTE = palette_from_hex(
    """
    787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 04fa07 e005ff ebff07
    96053d 787846 08ff33 ff0652 8fff8c ccff04 ff3307 cc4603 0066c8 3de6fa ff0633 0b66ff
    ff0747 ff09e0 0907e6 dcdcdc ff095c 7009ff 08ffd6 07ffe0 ffb806 0aff47 ff290a 07ffff
    e0ff08 6608ff ff3d06 ffc207 ff7a08 00ff14 ff0829 ff0599 0633ff eb0cff a09614 00a3ff
    8c8c8c fa0a0f 14ff00 1fff00 ff1f00 ffe000 99ff00 0000ff ff4700 00ebff 00adff 1f00ff
    0bc8c8 ff5200 00fff5 003dff 00ff70 00ff85 ff0000 ffa300 ff6600 c2ff00 008fff 33ff00
    0052ff 00ff29 00ffad 0a00ff adff00 00ff99 ff5c00 ff00ff ff00f5 ff0066 ffad00 ff0014
    ffb8b8 001fff 00ff3d 0047ff ff00cc 00ffc2 00ff52 000aff 0070ff 3300ff 00c2ff 007aff
    00ffa3 ff9900 00ff0a ff7000 8fff00 5200ff a3ff00 ffeb00 08b8aa 8500ff 00ff5c b800ff
    ff001f 00b8ff 00d6ff ff0070 5cff00 00e0ff 70e0ff 46b8a0 a300ff 9900ff 47ff00 ff00a3
    ffcc00 ff008f 00ffeb 85ff00 ff00eb f500ff ff007a fff500 0abed4 d6ff00 00ccff 1400ff
    ffff00 0099ff 0029ff 00ffcc 2900ff 29ff00 ad00ff 00f5ff 4700ff 7a00ff 00ffb8 005cff
    b8ff00 0085ff ffd600 19c2c2 66ff00 5c00ff
    """
)


def load_ade20k(data: DataConfig, seed: int) -> Source:
    """ADE20K's train and eval splits with its 150 names, its palette and reduce_labels.

    `data.path` is set: `load_source` gives the default path when the recipe has none.

    Raises:
        DatasetError: the official folder is missing (with where to download it) or incomplete (missing
            folder, unpaired files, unknown split name, empty split); or as `load_hub` for other paths.
    """
    path = data.path
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
    """A path meant as a folder: the default folder, or anything that cannot be a Hub id."""
    if path == DATA_SOURCES["ade20k"].default_path:
        return True
    try:
        validate_repo_id(path)
    except HFValidationError:
        return True
    return False


def _load_folder(root: Path, data: DataConfig) -> Source:
    """The splits of an ADEChallengeData2016 folder."""
    listed = {split: _pair_split(root, split) for split in (data.train_split, data.eval_split)}
    splits, skipped = paired_splits(listed, data.skip_invalid, root, "ADE20K")
    return Source(splits=splits, name=str(root), skipped=skipped)


def _pair_split(root: Path, split: str) -> tuple[list[str], list[str], list[str]]:
    folder = official_split_folder(root, split, SPLIT_FOLDERS, "ADE20K")
    return pair_by_stem(
        files_by_stem(root / "images" / folder, (".jpg", ".jpeg", ".png")),
        files_by_stem(root / "annotations" / folder, (".png",)),
        root,
        f"images/{folder}/{{}}.jpg",
        f"annotations/{folder}/{{}}.png",
    )
