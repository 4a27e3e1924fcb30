"""Typed recipes: every default in one place, a YAML file on top, dotted `--set` overrides on top of that.

    recipe = load_recipe("cityscapes.yaml", ["train.max_steps=100", "optim.lr=1e-4"])

Defaults are the paper's (SegFormer, arXiv 2105.15203; NVlabs / mmseg configs): a recipe file only
states what differs. Everything is validated before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import RecipeError

ARCHS = ("mix_transformer", "segformer")  # model.arch, and the formats a run is pushed in (hub.format)
PRECISIONS = ("no", "bf16", "fp16")
EVAL_MODES = ("whole", "slide")
COMPILE_MODES = (True, False, "auto")
CHECK_LEVELS = ("full", "quick", "off")
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


@dataclass
class ModelConfig:
    """Which network, and where its initial weights come from."""

    arch: str = "mix_transformer"  # "mix_transformer" (segtune) or "segformer" (transformers)
    variant: str = "mit-b0"  # mit-b0 .. mit-b5 (MixTransformerConfig's table; checked when the model is built)
    init: str = "pretrained"  # "pretrained" (from init_from) or "random"
    init_from: str | None = None  # Hub id or local path; None means nvidia/<variant>
    drop_path_rate: float = 0.1
    classifier_dropout_prob: float = 0.1
    gradient_checkpointing: bool = False

    @property
    def checkpoint(self) -> str:
        """The checkpoint a pretrained model starts from."""
        return self.init_from or f"nvidia/{self.variant}"


@dataclass
class SyntheticConfig:
    """The embedded synthetic dataset: deterministic scenes, no download."""

    num_train: int = 512
    num_eval: int = 64
    image_size: int = 128
    num_classes: int = 6
    seed: int = 0  # the scenes; independent of train.seed, so the data stays put when training varies


@dataclass
class DataConfig:
    """Where samples come from and what their labels mean."""

    source: str = "synthetic"  # synthetic | folder | cityscapes | hub | ade20k | coco_stuff (data.sources.SOURCES)
    path: str | None = None  # dataset folder, Hub dataset name, or save_to_disk / parquet path; None: the default
    config_name: str | None = None  # Hub dataset config
    train_split: str = "train"
    eval_split: str = "validation"
    image_column: str = "image"
    label_column: str = "label"
    val_ratio: float | None = None  # folder without train/val subfolders: seeded split ratio
    num_labels: int | None = None  # None: from id2label or the source
    id2label: dict[int, str] | None = None
    reduce_labels: bool = False  # ADE20K convention: 0 -> ignore, k -> k-1
    ignore_index: int = 255
    skip_invalid: bool = False  # skip and count bad samples instead of stopping
    check: str = "quick"  # pre-flight check of every sample: quick (file headers) | full (+ mask values) | off
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    num_workers: int = 2
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class AugmentConfig:
    """Training augmentation, as mmseg's pipeline for SegFormer."""

    scale: tuple[int, int] = (2048, 512)  # (long side, short side) of the base resize, aspect ratio kept
    ratio_range: tuple[float, float] = (0.5, 2.0)
    crop_size: tuple[int, int] = (512, 512)  # (height, width)
    cat_max_ratio: float = 0.75  # re-draw crops where one class covers more than this
    flip_prob: float = 0.5
    photometric: bool = True
    brightness: float = 32 / 255  # additive delta, as mmseg's PhotoMetricDistortion
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue: float = 18 / 180  # fraction of the hue circle (mmseg: 18 of OpenCV's 180 hue units)


@dataclass
class TrainConfig:
    """The loop: length, batch, checkpoints, precision."""

    output_dir: str | None = None  # None: outputs/<recipe name>
    max_steps: int = 160_000
    per_device_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    reference_batch_size: int = 8  # the paper's total batch; a different effective batch is warned about
    eval_steps: int = 16_000
    save_steps: int = 16_000
    save_total_limit: int = 2  # last K checkpoints kept, plus the best by mIoU
    logging_steps: int = 50
    seed: int = 0
    mixed_precision: str = "no"  # no | bf16 | fp16
    max_grad_norm: float | None = None
    # torch.compile the model for training. auto: on for CUDA runs of at least COMPILE_MIN_STEPS steps,
    # off on CPU and MPS and for short runs, where compiling (~80 s for B0) would cost more than it saves.
    compile: bool | str = "auto"


@dataclass
class OptimConfig:
    """AdamW with a 10x head learning rate, linear warmup then poly decay."""

    lr: float = 6e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    head_lr_mult: float = 10.0
    norm_weight_decay: float = 0.0  # norms and biases
    warmup_steps: int = 1500  # linear from 0 (mmseg starts at 1e-6 x lr: the same to a millionth)
    poly_power: float = 1.0
    min_lr: float = 0.0  # lr at max_steps (the head group ends at head_lr_mult x this)


@dataclass
class EvalConfig:
    """Evaluation: scored against labels at their native resolution."""

    mode: str = "whole"  # whole | slide
    resize: tuple[int, int] | None = None  # (long, short) keep-ratio test scale; None: native size
    crop_size: tuple[int, int] = (1024, 1024)  # sliding window (height, width)
    stride: tuple[int, int] = (768, 768)
    tta: bool = False  # multi-scale + flip test-time augmentation
    tta_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    tta_flip: bool = True
    window_batch: int = 4  # sliding windows per forward pass
    batch_size: int = 1
    # torch.compile evaluation too, with dynamic shapes (one graph for every image size: measured, no
    # recompiles). auto: whenever training compiles; `python -m segtune.evaluate` compiles only when true.
    compile: bool | str = "auto"
    num_visualizations: int = 8  # samples in the prediction grid


@dataclass
class HubConfig:
    """Pushing the result to the Hugging Face Hub at the end of training."""

    push: bool = False
    repo_id: str | None = None
    private: bool = False
    format: str = "mix_transformer"  # mix_transformer (remote code) | segformer (stock transformers)


@dataclass
class LoggingConfig:
    """Experiment trackers, through Accelerate."""

    report_to: tuple[str, ...] = ("tensorboard",)  # tensorboard | wandb | trackio | none
    project_name: str = "segtune"


@dataclass
class Recipe:
    """A whole fine-tuning run."""

    name: str = "recipe"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def output_dir(self) -> Path:
        return Path(self.train.output_dir or f"outputs/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def flat(self) -> dict[str, Any]:
        """Every setting under its dotted key (`optim.lr`), `data.id2label` kept as one mapping."""
        return dict(_flatten(self.to_dict()))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())


# --- loading -------------------------------------------------------------------------------------


def available_recipes() -> list[str]:
    """Names of the recipes shipped with segtune."""
    return sorted(p.name for p in RECIPES_DIR.glob("*.yaml"))


def find_recipe(name_or_path: str | Path) -> Path:
    """A path as given, else a shipped recipe by name (with or without `.yaml`).

    Raises:
        RecipeError: neither exists; the message lists the shipped recipes.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (RECIPES_DIR / path.name, RECIPES_DIR / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    raise RecipeError(f"recipe {str(name_or_path)!r} not found: not a file, and not one of {available_recipes()}")


def load_recipe(name_or_path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Defaults, then the YAML file (if any), then `KEY=VALUE` overrides; validated.

    Raises:
        RecipeError: missing file, bad YAML, unknown key (with the closest valid key), wrong type,
            or an invalid value.
    """
    recipe, source = Recipe(), "defaults"
    if name_or_path is not None:
        path = find_recipe(name_or_path)
        source = str(path)
        values = _read_yaml(path)
        recipe = recipe_from_dict(values, source)
        if "name" not in values:
            recipe.name = path.stem
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise RecipeError(f"--set {override!r}: expected KEY=VALUE, e.g. train.max_steps=100")
        set_value(recipe, key.strip(), yaml.safe_load(value) if value.strip() else None, f"--set {key.strip()}")
    validate(recipe)
    return recipe


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise RecipeError(f"{path}: expected a mapping of sections (model, data, ...), found {type(content).__name__}")
    return content


def recipe_from_dict(values: dict[str, Any], source: str = "recipe") -> Recipe:
    """Apply a nested mapping onto the defaults, key by key, with type checks."""
    recipe = Recipe()
    for key, value in _flatten(values):
        set_value(recipe, key, value, f"{source}: {key}")
    return recipe


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        # id2label is a mapping value, not a section
        if isinstance(value, dict) and dotted not in MAPPING_KEYS:
            items += _flatten(value, f"{dotted}.") if value else [(dotted, value)]
        else:
            items.append((dotted, value))
    return items


MAPPING_KEYS = {"data.id2label"}


def all_keys(node: Any = None, prefix: str = "") -> list[str]:
    """Every dotted key a recipe accepts."""
    node = Recipe() if node is None else node
    keys = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            keys += all_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def set_value(recipe: Recipe, key: str, value: Any, where: str) -> None:
    """Set one dotted key, coercing `value` to the field's type.

    Raises:
        RecipeError: unknown key (naming the closest valid one) or a value of the wrong type.
    """
    *parents, leaf = key.split(".")
    node = recipe
    for part in parents:
        child = getattr(node, part, None)
        if not dataclasses.is_dataclass(child):
            _unknown(key, where)
        node = child
    hints = typing.get_type_hints(type(node))
    if leaf not in hints or dataclasses.is_dataclass(getattr(node, leaf)):
        _unknown(key, where)
    if value is False and key in _FALSE_AS:
        value = _FALSE_AS[key]
    setattr(node, leaf, coerce(value, hints[leaf], where))


# YAML 1.1 reads `off` as false: text keys whose "off" choice is spelled `off` get their word back.
_FALSE_AS = {"data.check": "off"}


# Names users bring from transformers' TrainingArguments and mmseg configs.
_ALIASES = {
    "learning_rate": "optim.lr",
    "max_iters": "train.max_steps",
    "num_train_steps": "train.max_steps",
    "batch_size": "train.per_device_batch_size",
    "per_device_train_batch_size": "train.per_device_batch_size",
    "samples_per_gpu": "train.per_device_batch_size",
    "gradient_accumulation": "train.gradient_accumulation_steps",
    "fp16": "train.mixed_precision",
    "bf16": "train.mixed_precision",
    "crop": "augment.crop_size",
}


def _unknown(key: str, where: str) -> typing.NoReturn:
    keys = all_keys()
    leaf = key.rsplit(".", 1)[-1]
    close = [_ALIASES[leaf]] if leaf in _ALIASES else difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    leaves = {k.rsplit(".", 1)[-1]: k for k in keys}
    close = close or [leaves[m] for m in difflib.get_close_matches(leaf, list(leaves), n=1)]
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid sections: {sorted({k.split('.')[0] for k in keys})}"
    raise RecipeError(f"{where}: unknown key {key!r}{hint}")


def coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` as type `hint` (int, float, bool, str, tuples, lists, dicts, Optional).

    Raises:
        RecipeError: the value cannot be read as that type.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where)
            except RecipeError as error:
                errors.append(str(error))
        raise RecipeError(errors[0])
    if origin is tuple:
        return _coerce_tuple(value, args, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, found {value!r}")
        key_type, value_type = args
        return {coerce(k, key_type, where): coerce(v, value_type, where) for k, v in value.items()}
    return _coerce_scalar(value, hint, where)


def _coerce_tuple(value: Any, args: tuple, where: str) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and len(args) == 2 and args[1] is not Ellipsis:
        value = (value, value)  # `crop_size: 512` means 512 x 512
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split()]
    if not isinstance(value, (list, tuple)):
        raise RecipeError(f"{where}: expected a list, found {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(v, args[0], where) for v in value)
    if len(value) != len(args):
        raise RecipeError(f"{where}: expected {len(args)} values, found {len(value)}: {list(value)}")
    return tuple(coerce(v, a, where) for v, a in zip(value, args))


def _coerce_scalar(value: Any, hint: type, where: str) -> Any:
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1", "on"):
                return True
            if str(value).lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)  # YAML reads "1e-4" as a string; float() does not
        if hint is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            if isinstance(value, bool):  # YAML 1.1 reads `no` / `yes` (as in mixed_precision: no) as booleans
                return "yes" if value else "no"
            return str(value)
    except (TypeError, ValueError):
        raise RecipeError(f"{where}: expected {hint.__name__}, found {value!r}") from None
    return value


# --- validation ----------------------------------------------------------------------------------


def validate(recipe: Recipe) -> None:
    """Refuse a recipe that cannot run, before any work starts.

    Raises:
        RecipeError: listing every invalid value, each with its key, what was expected and what was found.
    """
    problems = [p for check in _CHECKS for p in check(recipe)]
    if problems:
        raise RecipeError("invalid recipe:\n  " + "\n  ".join(problems))


def _choice(key: str, value: Any, choices: tuple) -> list[str]:
    return [] if value in choices else [f"{key}: expected one of {list(choices)}, found {value!r}"]


def _positive(key: str, value: float | tuple | None, allow_zero: bool = False) -> list[str]:
    values = value if isinstance(value, tuple) else (value,)
    bad = [v for v in values if v is not None and (v < 0 or (v == 0 and not allow_zero))]
    kind = "non-negative" if allow_zero else "positive"
    return [f"{key}: expected {kind}, found {value!r}"] if bad else []


def _check_model(r: Recipe) -> list[str]:
    m = r.model
    return (
        _choice("model.arch", m.arch, ARCHS)
        + _choice("model.init", m.init, ("pretrained", "random"))
        + _positive("model.drop_path_rate", m.drop_path_rate, allow_zero=True)
    )


def _check_data(r: Recipe) -> list[str]:
    from .data.sources import SOURCES  # here, not at the top: segtune.data imports this module

    d = r.data
    problems = _choice("data.source", d.source, tuple(SOURCES)) + _choice("data.check", d.check, CHECK_LEVELS)
    entry = SOURCES.get(d.source)
    if entry is not None and entry.needs_path and not d.path and entry.default_path is None:
        problems.append(f"data.path: expected a path or dataset name for data.source={d.source!r}, found none")
    if d.val_ratio is not None and not 0 < d.val_ratio < 1:
        problems.append(f"data.val_ratio: expected a fraction in (0, 1), found {d.val_ratio}")
    if d.num_labels is not None and d.id2label is not None and d.num_labels != len(d.id2label):
        problems.append(
            f"data.num_labels: {d.num_labels} disagrees with data.id2label, which has {len(d.id2label)} names"
        )
    s = d.synthetic
    return (
        problems
        + _positive("data.num_labels", d.num_labels)
        + _positive("data.synthetic", (s.num_train, s.num_eval, s.image_size, s.num_classes))
        + _positive("data.num_workers", d.num_workers, allow_zero=True)
    )


def _check_augment(r: Recipe) -> list[str]:
    a = r.augment
    problems = _positive("augment.crop_size", a.crop_size) + _positive("augment.scale", a.scale)
    problems += _positive("augment.ratio_range", a.ratio_range)
    if a.ratio_range[0] > a.ratio_range[1]:
        problems.append(f"augment.ratio_range: expected (low, high) with low <= high, found {a.ratio_range}")
    if not 0 < a.cat_max_ratio <= 1:
        problems.append(f"augment.cat_max_ratio: expected a fraction in (0, 1], found {a.cat_max_ratio}")
    if not 0 <= a.flip_prob <= 1:
        problems.append(f"augment.flip_prob: expected a probability in [0, 1], found {a.flip_prob}")
    return problems


def _check_train(r: Recipe) -> list[str]:
    t = r.train
    problems = _choice("train.mixed_precision", t.mixed_precision, PRECISIONS)
    problems += _choice("train.compile", t.compile, COMPILE_MODES)
    for key in (
        "max_steps",
        "per_device_batch_size",
        "gradient_accumulation_steps",
        "reference_batch_size",
        "eval_steps",
        "save_steps",
        "logging_steps",
        "save_total_limit",
    ):
        problems += _positive(f"train.{key}", getattr(t, key))
    return problems + _positive("train.max_grad_norm", t.max_grad_norm)


def _check_optim(r: Recipe) -> list[str]:
    o = r.optim
    problems = _positive("optim.lr", o.lr) + _positive("optim.head_lr_mult", o.head_lr_mult)
    for key in ("weight_decay", "norm_weight_decay", "warmup_steps", "poly_power", "min_lr", "eps"):
        problems += _positive(f"optim.{key}", getattr(o, key), allow_zero=True)
    if not all(0 <= b < 1 for b in o.betas):
        problems.append(f"optim.betas: expected two values in [0, 1), found {o.betas}")
    if o.min_lr >= o.lr:
        problems.append(f"optim.min_lr: expected less than optim.lr ({o.lr}), found {o.min_lr}")
    return problems


def _check_eval(r: Recipe) -> list[str]:
    e = r.eval
    problems = _choice("eval.mode", e.mode, EVAL_MODES)
    problems += _positive("eval.crop_size", e.crop_size) + _positive("eval.stride", e.stride)
    problems += _positive("eval.resize", e.resize) + _positive("eval.tta_scales", e.tta_scales)
    problems += _positive("eval.batch_size", e.batch_size) + _positive("eval.window_batch", e.window_batch)
    problems += _choice("eval.compile", e.compile, COMPILE_MODES)
    if any(s > c for s, c in zip(e.stride, e.crop_size)):
        problems.append(
            f"eval.stride: expected at most eval.crop_size {e.crop_size} (windows must overlap or touch), found {e.stride}"
        )
    return problems


def _check_hub(r: Recipe) -> list[str]:
    h = r.hub
    problems = _choice("hub.format", h.format, ARCHS)
    if h.push and not h.repo_id:
        problems.append(
            "hub.repo_id: expected a repo id such as 'user/segformer-b0-city' when hub.push is true, found none"
        )
    return problems


def _check_logging(r: Recipe) -> list[str]:
    known = ("tensorboard", "wandb", "trackio", "none")
    return [
        f"logging.report_to: expected some of {list(known)}, found {t!r}" for t in r.logging.report_to if t not in known
    ]


_CHECKS = (
    _check_model,
    _check_data,
    _check_augment,
    _check_train,
    _check_optim,
    _check_eval,
    _check_hub,
    _check_logging,
)


def _plain(value: Any) -> Any:
    """Tuples as lists, so the YAML dump stays plain and safe_load-able."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
