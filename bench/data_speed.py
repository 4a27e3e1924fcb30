"""Training-pipeline throughput per worker on Cityscapes-size images: segtune against transformers' example.

    PYTHONPATH=. python bench/data_speed.py [--images 6] [--rounds 5] [--items 12]

Writes a few 1024x2048 PNG scenes (with label-id masks) into a temporary Cityscapes tree, then times
one process on one thread (what one DataLoader worker gets) turning stored files into training tensors:

- segtune: `build_datasets(recipe).train[key]` with the paper's Cityscapes recipe: random resize of
  (2048, 1024) by 0.5-2.0, 1024x1024 crop with cat_max_ratio 0.75, flip, pad, label ids mapped to train
  ids, photometric parameters drawn: the uint8 sample a worker hands over. Its second row adds what the
  training device does with it (`data.preprocess`: photometric distortion, normalisation), here on the
  CPU too, so that both rows end with the same float32 tensors as the example.
- transformers' example (examples/pytorch/semantic-segmentation/run_semantic_segmentation_no_trainer.py),
  re-created from its documented behaviour: a `datasets` Dataset with Image features and `with_transform`;
  per sample `image.convert("RGB")`, pad-if-smaller (mask with 255), `RandomCrop` to the processor's size
  (1024x1024 here), horizontal flip 0.5, `pil_to_tensor`, `convert_image_dtype(float)`, `Normalize` with
  the SegformerImageProcessor's mean and std. It does no random resize and no photometric distortion.

Rounds alternate between the two so that machine noise hits both; the median round is reported.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import torch
from torchvision import transforms
from torchvision.transforms import functional

from segtune.data import build_datasets, build_image_processor
from segtune.data.loaders import train_collate
from segtune.recipe import load_recipe

HEIGHT, WIDTH, CROP = 1024, 2048, 1024


def street_scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A Cityscapes-like frame: sky, facades with windows, vegetation, road, cars and poles, with sensor
    noise; the PNG is ~2.5 MB, like a real leftImg8bit frame. Returns (RGB uint8, label ids uint8)."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    horizon = int(rng.integers(380, 520))
    image = np.empty((HEIGHT, WIDTH, 3), np.float32)
    labels = np.empty((HEIGHT, WIDTH), np.uint8)
    image[:] = np.array([110, 150, 200]) + (yy[..., None] / HEIGHT) * 60  # sky, brighter to the horizon
    labels[:] = 23
    for x0 in range(0, WIDTH, int(rng.integers(180, 320))):  # facades of varying height and colour
        top, width = int(rng.integers(40, horizon - 60)), int(rng.integers(150, 330))
        image[top:horizon, x0 : x0 + width] = rng.uniform(60, 200, 3)
        labels[top:horizon, x0 : x0 + width] = 11
        windows = ((yy[top:horizon, x0 : x0 + width] % 48) < 24) & ((xx[top:horizon, x0 : x0 + width] % 40) < 20)
        image[top:horizon, x0 : x0 + width][windows] *= 0.55
    for _ in range(int(rng.integers(2, 5))):  # trees
        cy, cx, r = rng.integers(horizon - 200, horizon), rng.integers(0, WIDTH), rng.integers(60, 160)
        tree = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        image[tree] = np.array([70, 110, 40]) + rng.normal(0, 18, (int(tree.sum()), 1))
        labels[tree] = 21
    road = yy >= horizon
    image[road] = (np.array([128, 64, 128]) * 0.6 + 40)[None] + (yy[road] - horizon)[:, None] * 0.05
    labels[road] = 7
    image[road & (xx < 300)] = (200, 180, 190)
    labels[road & (xx < 300)] = 8  # sidewalk
    for _ in range(int(rng.integers(3, 8))):  # cars and poles
        h, w, label = (
            (int(rng.integers(80, 220)), int(rng.integers(160, 420)), 26)
            if rng.random() < 0.7
            else (int(rng.integers(200, 450)), int(rng.integers(8, 20)), 17)
        )
        y, x = int(rng.integers(horizon - h // 2, min(HEIGHT - h, horizon + 300))), int(rng.integers(0, WIDTH - w))
        image[y : y + h, x : x + w] = rng.uniform(20, 230, 3)
        labels[y : y + h, x : x + w] = label
    labels[-60:] = 1  # ego vehicle: ignored after mapping
    image += rng.normal(0, 1.0, image.shape)
    return image.clip(0, 255).astype(np.uint8), labels


def write_tree(root: Path, count: int) -> list[tuple[str, str]]:
    """A Cityscapes tree of `count` train scenes (and one val scene); returns the train (image, mask) paths."""
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(count + 1):
        split = "train" if i < count else "val"
        image, labels = street_scene(rng)
        paths = []
        for folder, suffix, array in (("leftImg8bit", "leftImg8bit", image), ("gtFine", "gtFine_labelIds", labels)):
            path = root / folder / split / "city" / f"city_{i:06d}_000019_{suffix}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            PIL.Image.fromarray(array).save(path)
            paths.append(str(path))
        if split == "train":
            pairs.append((paths[0], paths[1]))
    return pairs


def ours(root: Path, preprocess: bool):
    recipe = load_recipe(
        None,
        [
            "data.source=cityscapes",
            f"data.path={root}",
            "augment.scale=[2048,1024]",
            "augment.crop_size=[1024,1024]",
            "data.check=off",
        ],
    )
    data = build_datasets(recipe)
    if not preprocess:
        return lambda key: data.train[key]

    def fetch(key: int) -> dict:
        pixel_values, labels = data.preprocess(train_collate([data.train[key]]))
        return {"pixel_values": pixel_values[0], "labels": labels[0]}

    return fetch


def example_train_transform(mean, std, crop: int):
    """The example script's per-batch training transform (for `Dataset.with_transform`)."""

    def pad_if_smaller(image, size, fill=0):
        width, height = image.size
        if min(width, height) >= size:
            return image
        return functional.pad(image, (0, 0, max(size - width, 0), max(size - height, 0)), fill=fill)

    def preprocess_train(batch):
        pixel_values, labels = [], []
        for image, target in zip(batch["image"], batch["label"]):
            image = pad_if_smaller(image.convert("RGB"), crop)
            target = pad_if_smaller(target, crop, fill=255)
            top, left, height, width = transforms.RandomCrop.get_params(image, (crop, crop))
            image, target = (
                functional.crop(image, top, left, height, width),
                functional.crop(target, top, left, height, width),
            )
            if random.random() < 0.5:
                image, target = functional.hflip(image), functional.hflip(target)
            image = functional.pil_to_tensor(image)
            target = torch.as_tensor(np.array(target), dtype=torch.int64)
            image = functional.convert_image_dtype(image, torch.float)
            pixel_values.append(functional.normalize(image, mean=mean, std=std))
            labels.append(target)
        return {"pixel_values": pixel_values, "labels": labels}

    return preprocess_train


def transformers_example(pairs: list[tuple[str, str]], recipe_processor):
    """The example script's training transforms, over a `datasets` Dataset of the same files."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    dataset = datasets.Dataset.from_dict(
        {"image": [p[0] for p in pairs], "label": [p[1] for p in pairs]}, features=features
    )
    transform = example_train_transform(recipe_processor.image_mean, recipe_processor.image_std, CROP)
    transformed = dataset.with_transform(transform)
    return lambda key: transformed[key % len(transformed)]


def time_round(fetch, keys: list[int]) -> float:
    """Seconds per item over `keys`."""
    start = time.perf_counter()
    for key in keys:
        item = fetch(key)
        image = item.get("pixel_values", item.get("image"))
        assert image.shape == (3, CROP, CROP) and item["labels"].shape == (CROP, CROP)
    return (time.perf_counter() - start) / len(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--items", type=int, default=12, help="items per round")
    args = parser.parse_args()
    torch.set_num_threads(1)  # what each DataLoader worker gets
    random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        pairs = write_tree(Path(tmp), args.images)
        pipelines = {
            "segtune worker": ours(Path(tmp), preprocess=False),
            "segtune + preprocess": ours(Path(tmp), preprocess=True),
            "transformers example": transformers_example(pairs, build_image_processor(load_recipe())),
        }
        times: dict[str, list[float]] = {name: [] for name in pipelines}
        for fetch in pipelines.values():
            time_round(fetch, list(range(args.images)))  # warm-up: page cache, lazy imports
        for r in range(args.rounds):
            keys = list(range(r * args.items, (r + 1) * args.items))
            for name, fetch in pipelines.items():
                times[name].append(time_round(fetch, keys))
    rates = {name: 1.0 / statistics.median(t) for name, t in times.items()}
    print(f"{args.images} PNG scenes {HEIGHT}x{WIDTH} -> {CROP}x{CROP} training tensors, 1 process, 1 thread")
    for name, rate in rates.items():
        print(
            f"  {name:<22} {rate:6.2f} images/s per worker  ({1000 / rate:6.1f} ms/image, median of {args.rounds} rounds)"
        )
    for name in ("segtune worker", "segtune + preprocess"):
        print(f"  {name} / transformers example: {rates[name] / rates['transformers example']:.2f}x")


if __name__ == "__main__":
    main()
