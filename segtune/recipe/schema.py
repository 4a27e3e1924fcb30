"""The recipe's schema: every setting, its type and its default, and the choices validation checks against.

Defaults are the paper's (SegFormer, arXiv 2105.15203; NVlabs / mmseg configs): a recipe file only states
what differs. The names of the data sources, and which of them need a `data.path`, live here too, so that
validating a recipe needs nothing from `segtune.data`, which maps each name to its loader.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ARCHS = ("mix_transformer", "segformer")  # model.arch, and the formats a run is pushed in (hub.format)
INITS = ("pretrained", "random")  # model.init
# model.variant: the names of MixTransformerConfig's table (tests/test_recipe.py keeps them equal)
MIT_VARIANTS = ("mit-b0", "mit-b1", "mit-b2", "mit-b3", "mit-b4", "mit-b5")
PRECISIONS = ("no", "bf16", "fp16")
EVAL_MODES = ("whole", "slide")
COMPILE_MODES = (True, False, "auto")
CHECK_LEVELS = ("full", "quick", "off")
TRACKERS = ("tensorboard", "wandb", "trackio", "none")
# train.max_steps when a recipe gives neither it nor train.max_epochs (the paper's 160k iterations)
PAPER_MAX_STEPS = 160_000
# loss terms that take loss.class_weights (Dice, Jaccard and Lovász already weigh every class alike)
CLASS_WEIGHTED_TERMS = ("ce", "ohem", "focal")
PEFT_METHODS = ("none", "lora")  # model.peft.method: full fine-tuning, or LoRA through the peft library


@dataclass(frozen=True)
class SourceSpec:
    """What a recipe must say for one `data.source`.

    Attributes:
        needs_path: the source reads `data.path`.
        default_path: the path read when `data.path` is not set (None: the recipe must give one).
    """

    needs_path: bool
    default_path: str | None = None


# Every `data.source`; segtune.data.sources maps each name to its loader.
DATA_SOURCES: dict[str, SourceSpec] = {
    "synthetic": SourceSpec(needs_path=False),
    "folder": SourceSpec(needs_path=True),
    "cityscapes": SourceSpec(needs_path=True),
    "hub": SourceSpec(needs_path=True),
    "ade20k": SourceSpec(needs_path=True, default_path="data/ADEChallengeData2016"),
    "coco_stuff": SourceSpec(needs_path=True, default_path="data/coco_stuff164k"),
    "coco": SourceSpec(needs_path=True),
    "labelme": SourceSpec(needs_path=True),
    "yolo": SourceSpec(needs_path=True),
    "voc": SourceSpec(needs_path=True, default_path="data/VOCdevkit/VOC2012"),
}


@dataclass
class PeftConfig:
    """Parameter-efficient fine-tuning through the `peft` library (off by default: full fine-tuning).

    LoRA adapters on the encoder's `target_modules`; the decode head is trained in full (peft's
    `modules_to_save`). The run's final model is merged (an ordinary checkpoint); the adapter is kept beside it.
    """

    method: str = "none"  # none (full fine-tuning) | lora
    r: int = 16  # LoRA rank
    alpha: float = 16.0  # LoRA scaling numerator: the update is (alpha / r) * B @ A
    dropout: float = 0.1  # dropout on the LoRA branch's input
    # Linear layers to adapt, matched as peft matches a list: the whole module name or its end after a dot.
    # None: the arch's default (segtune.models.peft.DEFAULT_TARGETS): every attention projection of MiT
    # (attn.q, the fused attn.kv, attn.proj); for segformer PEFT's guide's query and value (q_proj, v_proj).
    target_modules: tuple[str, ...] | None = None


@dataclass
class ModelConfig:
    """Which network, and where its initial weights come from."""

    arch: str = "mix_transformer"  # "mix_transformer" (segtune) or "segformer" (transformers)
    variant: str = "mit-b0"  # one of MIT_VARIANTS
    init: str = "pretrained"  # "pretrained" (from init_from) or "random"
    init_from: str | None = None  # Hub id or local path; None means nvidia/<variant>
    drop_path_rate: float = 0.1
    classifier_dropout_prob: float = 0.1
    gradient_checkpointing: bool = False
    peft: PeftConfig = field(default_factory=PeftConfig)

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

    source: str = "synthetic"  # one of DATA_SOURCES (synthetic, folder, cityscapes, hub, ade20k, coco_stuff, coco, ...)
    path: str | None = (
        None  # dataset folder, Hub dataset name, or save_to_disk / parquet path; None: the source's default
    )
    config_name: str | None = None  # Hub dataset config
    train_split: str = "train"
    eval_split: str = "validation"
    image_column: str = "image"
    label_column: str = "label"
    val_ratio: float | None = None  # a source without an eval split (flat folder): seeded split ratio
    # That split holds out images so that every class in >= 3 images is validated (iterative stratification,
    # segtune/data/stratify.py); false: a seeded random draw, as before.
    stratify: bool = True
    num_labels: int | None = None  # None: from id2label or the source
    id2label: dict[int, str] | None = None
    reduce_labels: bool = False  # ADE20K convention: 0 -> ignore, k -> k-1
    # Colour masks: "#rrggbb" (or "[r, g, b]") -> class id or the ignore index; RGB(A) masks are decoded by
    # these colours (single-channel masks stay class ids), and they become the run's palette. None: the
    # colours of the source's id2label.json, if it has any.
    colors: dict[str, int] | None = None
    ignore_index: int = 255
    # raw mask value -> class id or ignore_index, for any source: {255: 1} for 0/255 binary masks. A value it
    # lists bypasses the source's own mapping (Cityscapes ids, reduce_labels); unlisted values keep it.
    label_map: dict[int, int] | None = None
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
    # One of max_steps and max_epochs; with neither, validation sets max_steps to PAPER_MAX_STEPS.
    max_steps: int | None = None
    max_epochs: int | None = None  # converted to steps from the training split size, batch and processes
    per_device_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    reference_batch_size: int = 8  # the paper's total batch; a different effective batch is warned about
    eval_steps: int = 16_000
    save_steps: int = 16_000
    save_total_limit: int = 2  # last K checkpoints kept, plus the best by mIoU
    # Stop after this many evaluations in a row without an mIoU gain of at least min_delta (None: never), and
    # write the outputs from the best checkpoint; as transformers' EarlyStoppingCallback (patience, threshold).
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0
    logging_steps: int = 50
    seed: int = 0
    mixed_precision: str = "no"  # no | bf16 | fp16
    max_grad_norm: float | None = None
    # torch.compile the model for training. auto: on for CUDA runs of at least COMPILE_MIN_STEPS steps,
    # off on CPU and MPS and for short runs, where the time spent compiling would exceed the time it saves.
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
    # recompiles). auto: whenever training compiles; `segtune evaluate` compiles only when true.
    compile: bool | str = "auto"
    num_visualizations: int = 8  # samples in the prediction grid


@dataclass
class HubConfig:
    """Pushing the result to the Hugging Face Hub at the end of training."""

    push: bool = False
    repo_id: str | None = None
    private: bool = False
    format: str = "mix_transformer"  # mix_transformer (remote code) | segformer (stock transformers)
    adapter: bool = False  # push the LoRA adapter alone (model.peft), instead of the merged model


@dataclass
class LoggingConfig:
    """Experiment trackers, through Accelerate."""

    report_to: tuple[str, ...] = ("tensorboard",)  # tensorboard | wandb | trackio | none
    project_name: str = "segtune"


@dataclass
class LossTerm:
    """One term of the loss, by `name`; each name takes its own parameters (the subclasses below)."""

    name: str = "ce"
    weight: float = 1.0  # the term's factor in the sum


@dataclass
class CrossEntropyTerm(LossTerm):
    """Cross-entropy: the model's own loss, plus class weights."""

    name: str = "ce"


@dataclass
class OHEMTerm(LossTerm):
    """Cross-entropy of the hard pixels, as mmseg's OHEMPixelSampler picks them (its Cityscapes configs' values)."""

    name: str = "ohem"
    thresh: float | None = 0.7  # keep pixels whose true-class probability is below this; None: the top min_kept losses
    min_kept: int = 100_000  # per image, at least


@dataclass
class DiceTerm(LossTerm):
    """1 - soft Dice, per class over the batch."""

    name: str = "dice"
    smooth: float = 0.0


@dataclass
class JaccardTerm(LossTerm):
    """1 - soft Jaccard (IoU), per class over the batch."""

    name: str = "jaccard"
    smooth: float = 0.0


@dataclass
class FocalTerm(LossTerm):
    """Sigmoid focal loss, each class against the rest."""

    name: str = "focal"
    gamma: float = 2.0
    alpha: float | None = None  # weight of the positives (negatives: 1 - alpha); None: no balancing


@dataclass
class LovaszTerm(LossTerm):
    """Lovász-softmax over the classes present."""

    name: str = "lovasz"
    per_image: bool = False  # average per image instead of over the whole batch


# Every loss term by name: the coercer builds a `loss.terms` entry as the class its `name` says.
LOSS_TERMS: dict[str, type[LossTerm]] = {
    "ce": CrossEntropyTerm,
    "ohem": OHEMTerm,
    "dice": DiceTerm,
    "lovasz": LovaszTerm,
    "focal": FocalTerm,
    "jaccard": JaccardTerm,
}
# Fields whose type is one of several dataclasses, chosen by a key: {base class: (key, {value: class})}.
TAGGED_UNIONS: dict[type, tuple[str, dict[str, type]]] = {LossTerm: ("name", LOSS_TERMS)}


@dataclass
class LossConfig:
    """The training loss. Left empty, the model's own cross-entropy, exactly as without this section."""

    terms: tuple[LossTerm, ...] = ()  # weighted terms, summed; none (with class_weights set): [ce]
    # one weight per class, or "auto": median-frequency balancing over the training split's pixels
    class_weights: tuple[float, ...] | str | None = None

    @property
    def active(self) -> bool:
        """Whether this section replaces the model's own loss."""
        return bool(self.terms) or self.class_weights is not None

    @property
    def active_terms(self) -> tuple[LossTerm, ...]:
        """The terms to sum: `terms`, or cross-entropy alone when only class weights are given."""
        return self.terms or (CrossEntropyTerm(),)


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
    loss: LossConfig = field(default_factory=LossConfig)

    @property
    def output_dir(self) -> Path:
        return Path(self.train.output_dir or f"outputs/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def flat(self) -> dict[str, Any]:
        """Every setting under its dotted key (`optim.lr`), the MAPPING_KEYS (`data.id2label`) each kept as one mapping."""
        return dict(dotted_items(self.to_dict()))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())


# Keys whose value is a mapping, not a section.
MAPPING_KEYS = {"data.id2label", "data.colors", "data.label_map"}


def dotted_items(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A nested mapping of sections as (dotted key, value) pairs, each of MAPPING_KEYS kept as one value."""
    items = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in MAPPING_KEYS:
            items += dotted_items(value, f"{dotted}.") if value else [(dotted, value)]
        else:
            items.append((dotted, value))
    return items


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


def _plain(value: Any) -> Any:
    """Tuples as lists, so the YAML dump stays plain and safe_load-able."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
