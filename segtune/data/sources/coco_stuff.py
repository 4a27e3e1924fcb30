"""COCO-Stuff-164k (171 classes) in mmsegmentation's layout, from its raw maps or converted train ids.

    data.source: coco_stuff      # data.path defaults to data/coco_stuff164k

    root/images/{train2017,val2017}/*.jpg                      COCO 2017 images (train2017.zip, val2017.zip)
    root/annotations/{train2017,val2017}/*.png                 stuffthingmaps_trainval2017.zip, unzipped
    root/annotations/{train2017,val2017}/*_labelTrainIds.png   or: converted by mmseg's coco_stuff164k.py

`data.train_split` `train` or `train2017` reads the train2017 folders, `data.eval_split` `validation`,
`val` or `val2017` the val2017 ones. When every image has a `*_labelTrainIds.png` mask, those are read
(values 0..170, 255 ignored). Otherwise the raw stuffthingmaps are read: they hold the COCO category id
minus one (0..181, 255 unlabeled), and the 171 ids that occur map in increasing order to 0..170, once,
through the LabelSpec. The other 11 ids (thing categories COCO never used) and any value above 181 but
255 are refused as out-of-range labels, never silently ignored.

The class names and colours are mmsegmentation's COCOStuffDataset's (mmseg/datasets/coco_stuff.py).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DatasetError
from ...recipe import DataConfig
from ..labels import palette_from_hex
from .base import Source, files_by_stem, official_split_folder, pair_by_stem, paired_splits

TRAIN_IDS_SUFFIX = "_labelTrainIds.png"
# The recipe's split names -> the COCO 2017 folders.
SPLIT_FOLDERS = {
    "train": "train2017",
    "train2017": "train2017",
    "validation": "val2017",
    "val": "val2017",
    "val2017": "val2017",
}
DOWNLOAD = (
    "http://images.cocodataset.org/zips/train2017.zip, http://images.cocodataset.org/zips/val2017.zip (unzip "
    "into images/) and http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/"
    "stuffthingmaps_trainval2017.zip (unzip into annotations/)"
)

# Raw stuffthingmaps values are COCO category ids minus one, 0..181; these 11 thing ids are never used.
UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
RAW_IGNORE = 255
# raw id -> train id: the 171 used ids in increasing order, as mmseg's tools/dataset_converters/coco_stuff164k.py.
RAW_TO_TRAIN = {raw: i for i, raw in enumerate(r for r in range(182) if r not in UNUSED_IDS)} | {RAW_IGNORE: 255}

CLASSES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
    "banner",
    "blanket",
    "branch",
    "bridge",
    "building-other",
    "bush",
    "cabinet",
    "cage",
    "cardboard",
    "carpet",
    "ceiling-other",
    "ceiling-tile",
    "cloth",
    "clothes",
    "clouds",
    "counter",
    "cupboard",
    "curtain",
    "desk-stuff",
    "dirt",
    "door-stuff",
    "fence",
    "floor-marble",
    "floor-other",
    "floor-stone",
    "floor-tile",
    "floor-wood",
    "flower",
    "fog",
    "food-other",
    "fruit",
    "furniture-other",
    "grass",
    "gravel",
    "ground-other",
    "hill",
    "house",
    "leaves",
    "light",
    "mat",
    "metal",
    "mirror-stuff",
    "moss",
    "mountain",
    "mud",
    "napkin",
    "net",
    "paper",
    "pavement",
    "pillow",
    "plant-other",
    "plastic",
    "platform",
    "playingfield",
    "railing",
    "railroad",
    "river",
    "road",
    "rock",
    "roof",
    "rug",
    "salad",
    "sand",
    "sea",
    "shelf",
    "sky-other",
    "skyscraper",
    "snow",
    "solid-other",
    "stairs",
    "stone",
    "straw",
    "structural-other",
    "table",
    "tent",
    "textile-other",
    "towel",
    "tree",
    "vegetable",
    "wall-brick",
    "wall-concrete",
    "wall-other",
    "wall-panel",
    "wall-stone",
    "wall-tile",
    "wall-wood",
    "water-other",
    "waterdrops",
    "window-blind",
    "window-other",
    "wood",
)

# mmseg's colours, kept as they are: a few classes share one (person and bicycle, ...).
PALETTE = palette_from_hex(
    """
    00c040 00c040 004060 80c0c0 004040 00c0e0 00c0c0 80c040 00c060 80c040 8020c0 0000e0
    000040 00a0c0 800060 8000c0 0020c0 8080e0 0000c0 80a0c0 808000 800020 802000 800080
    408020 00a000 000000 c080a0 002000 008080 4080a0 80a000 008000 c08020 806080 000080
    400020 00e080 800000 c000a0 006080 808080 4000a0 80e080 808040 c00020 806000 8000c0
    008020 40e000 000040 8080a0 406000 0080c0 0080a0 c0e000 008040 808020 c02080 0040c0
    000020 40a080 804040 8000a0 402080 80c0c0 0000a0 c0a080 80c000 800060 c02000 804080
    408060 40a000 004000 c080e0 402000 00c080 4080e0 c0a000 00c000 c08060 c06080 004080
    400060 40e080 804000 c000e0 406080 80c080 4000e0 c0e080 80c040 c00060 c06000 8040c0
    008060 00e000 404040 8080e0 006000 40c0c0 0080e0 80e000 40c040 808060 802080 4000c0
    004060 00a080 c00040 8040e0 002080 c080c0 0040e0 80a080 c08000 804020 802040 c00080
    40c020 00a040 400000 c0c0a0 002040 408080 40c0a0 80a040 408000 c0c020 8060c0 400080
    404020 00e0c0 c00000 c040a0 0060c0 c08080 4040a0 80e0c0 c08040 c04020 806040 c000c0
    00c020 40e040 400040 80c0a0 406040 4080c0 00c0a0 c0e040 408040 80c020 c020c0 4040c0
    004020 40a0c0 c04040 8040a0 4020c0 c0c0c0 0040a0 c0a0c0 c0c000 804060 c02040 c04080
    40c060 40a040 404000
    """
)


def load_coco_stuff(data: DataConfig, seed: int) -> Source:
    """COCO-Stuff-164k's train and eval splits with its 171 names and palette (`seed` is unused: fixed splits).

    Raises:
        DatasetError: the folder is missing (with where to download it) or incomplete (missing folder,
            unpaired files, unknown split name, empty split).
    """
    root = Path(data.path or "").expanduser()
    if not (root / "images").is_dir() or not (root / "annotations").is_dir():
        raise DatasetError(
            f"data.path {str(root)!r}: COCO-Stuff-164k folder with images/ and annotations/ not found. "
            f"Download {DOWNLOAD}, then point data.path at that folder"
        )
    folders = {
        split: official_split_folder(root, split, SPLIT_FOLDERS, "COCO-Stuff")
        for split in (data.train_split, data.eval_split)
    }
    files = {split: _list_split(root, folder) for split, folder in folders.items()}
    # the converted masks are read only when every image of both splits has one
    use_train_ids = all(converted and images.keys() <= converted.keys() for images, _, converted in files.values())
    listed = {
        split: pair_by_stem(
            images,
            converted if use_train_ids else raw,
            root,
            f"images/{folders[split]}/{{}}.jpg",
            f"annotations/{folders[split]}/{{}}{TRAIN_IDS_SUFFIX if use_train_ids else '.png'}",
        )
        for split, (images, raw, converted) in files.items()
    }
    splits, skipped = paired_splits(listed, data.skip_invalid, root, "COCO-Stuff")
    return Source(
        splits=splits,
        name=str(root),
        id2label=dict(enumerate(CLASSES)),
        palette=PALETTE,
        # train-id files hold train ids and 255 already, which the identity mapping checks
        label_map=None if use_train_ids else RAW_TO_TRAIN,
        strict_label_map=not use_train_ids,
        skipped=skipped,
    )


def _list_split(root: Path, folder: str) -> tuple[dict[str, Path], dict[str, Path], dict[str, Path]]:
    """(images, raw masks, converted masks) of a split by stem, each folder listed once."""
    masks = files_by_stem(root / "annotations" / folder, (".png",))
    tag = TRAIN_IDS_SUFFIX.removesuffix(".png").lower()  # matched without case, as files_by_stem matches suffixes
    converted = {stem[: -len(tag)]: path for stem, path in masks.items() if stem.lower().endswith(tag)}
    raw = {stem: path for stem, path in masks.items() if not stem.lower().endswith(tag)}
    return files_by_stem(root / "images" / folder, (".jpg", ".jpeg", ".png")), raw, converted
