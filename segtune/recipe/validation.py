"""Every check of a recipe: `validate` refuses what cannot run, `recipe_warnings` names what runs but is
probably not meant.

Validation reads only the schema (choices, MiT variants, data sources), so a recipe is checked before
torch, the model code or any data is imported.
"""

from __future__ import annotations

from typing import Any

from ..errors import RecipeError
from .colors import color_problems
from .schema import (
    ARCHS,
    CHECK_LEVELS,
    CLASS_WEIGHTED_TERMS,
    COMPILE_MODES,
    DATA_SOURCES,
    EVAL_MODES,
    INITS,
    LOSS_TERMS,
    MIT_VARIANTS,
    PAPER_MAX_STEPS,
    PEFT_METHODS,
    PRECISIONS,
    TRACKERS,
    DataConfig,
    FocalTerm,
    OHEMTerm,
    Recipe,
)


def validate(recipe: Recipe) -> None:
    """Refuse a recipe that cannot run, before any work starts. A recipe that gives neither
    `train.max_steps` nor `train.max_epochs` gets the paper's length, `train.max_steps` = PAPER_MAX_STEPS.

    Raises:
        RecipeError: listing every invalid value, each with its key, what was expected and what was found.
    """
    _default_length(recipe)
    problems = [p for check in _CHECKS for p in check(recipe)]
    if problems:
        raise RecipeError("invalid recipe:\n  " + "\n  ".join(problems))


def recipe_warnings(recipe: Recipe, num_processes: int, max_steps: int | None = None) -> list[str]:
    """What a valid recipe probably does not mean, for a run of `max_steps` steps (None: `train.max_steps`;
    the run's count when `train.max_epochs` sets its length) on `num_processes` processes.

    Returns:
        One message per finding: an effective batch other than the one the learning rate was set for,
        a warmup that never ends (a short trial of a long recipe, `--set train.max_steps=100`), and early
        stopping with too few evaluations to ever stop.
    """
    t, o = recipe.train, recipe.optim
    steps = t.max_steps if max_steps is None else max_steps
    warnings = []
    effective = num_processes * t.per_device_batch_size * t.gradient_accumulation_steps
    if effective != t.reference_batch_size:
        warnings.append(
            f"effective batch {effective} ({num_processes} processes x {t.per_device_batch_size} per device x "
            f"{t.gradient_accumulation_steps} accumulation) differs from the recipe's reference batch "
            f"{t.reference_batch_size}; the recipe's learning rate was set for {t.reference_batch_size}"
        )
    if steps is not None and o.warmup_steps >= steps:
        warnings.append(
            f"optim.warmup_steps={o.warmup_steps} >= {_length(recipe, steps)}: "
            "the learning rate only warms up in this run"
        )
    return warnings + _early_stopping_warnings(recipe, steps)


def _length(recipe: Recipe, steps: int) -> str:
    epochs = recipe.train.max_epochs
    return f"train.max_steps={steps}" if epochs is None else f"{steps} steps (train.max_epochs={epochs})"


def _early_stopping_warnings(recipe: Recipe, steps: int | None) -> list[str]:
    """Early stopping that can never stop: the first evaluation only sets the best, so stopping takes more
    than `patience` evaluations."""
    t = recipe.train
    if t.early_stopping_patience is None or steps is None:
        return []
    evaluations = -(-steps // t.eval_steps)  # every eval_steps, and always at the last step
    if evaluations > t.early_stopping_patience:
        return []
    return [
        f"train.early_stopping_patience={t.early_stopping_patience} needs more than "
        f"{t.early_stopping_patience} evaluations, and this run has {evaluations} "
        f"({_length(recipe, steps)}, train.eval_steps={t.eval_steps}): it never stops early"
    ]


def _choice(key: str, value: Any, choices: tuple) -> list[str]:
    return [] if value in choices else [f"{key}: expected one of {list(choices)}, found {value!r}"]


def _positive(key: str, value: float | tuple | None, allow_zero: bool = False) -> list[str]:
    values = value if isinstance(value, tuple) else (value,)
    bad = [v for v in values if v is not None and (v < 0 or (v == 0 and not allow_zero))]
    kind = "non-negative" if allow_zero else "positive"
    return [f"{key}: expected {kind}, found {value!r}"] if bad else []


def _check_model(r: Recipe) -> list[str]:
    m = r.model
    problems = _choice("model.arch", m.arch, ARCHS)
    if m.variant.lower() not in MIT_VARIANTS:  # any case, as MixTransformerConfig.from_variant reads it
        problems += _choice("model.variant", m.variant, MIT_VARIANTS)
    problems += _choice("model.init", m.init, INITS)
    return problems + _positive("model.drop_path_rate", m.drop_path_rate, allow_zero=True)


def _check_peft(r: Recipe) -> list[str]:
    """The `model.peft` section; whether each target names a layer of the model is checked once it is built."""
    p = r.model.peft
    problems = _choice("model.peft.method", p.method, PEFT_METHODS)
    problems += _positive("model.peft.r", p.r) + _positive("model.peft.alpha", p.alpha)
    if not 0 <= p.dropout < 1:
        problems.append(f"model.peft.dropout: expected a probability in [0, 1), found {p.dropout}")
    if p.target_modules is not None and (not p.target_modules or not all(t.strip() for t in p.target_modules)):
        problems.append(
            f"model.peft.target_modules: expected layer names (e.g. ['attn.q', 'attn.kv']) or null for the "
            f"arch's default, found {list(p.target_modules)}"
        )
    if r.hub.adapter and p.method != "lora":
        problems.append(
            f"hub.adapter: true pushes a LoRA adapter, which needs model.peft.method: lora; found {p.method!r}"
        )
    return problems


def _check_data(r: Recipe) -> list[str]:
    d = r.data
    problems = _choice("data.source", d.source, tuple(DATA_SOURCES)) + _choice("data.check", d.check, CHECK_LEVELS)
    spec = DATA_SOURCES.get(d.source)
    if spec is not None and spec.needs_path and not d.path and spec.default_path is None:
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
        + _check_colors(r)
        + _check_label_map(d.label_map, d.num_labels or len(d.id2label or {}) or None, d.ignore_index)
        + _positive("data.num_labels", d.num_labels)
        + _positive("data.synthetic", (s.num_train, s.num_eval, s.image_size, s.num_classes))
        + _positive("data.num_workers", d.num_workers, allow_zero=True)
    )


def _known_num_labels(d: DataConfig) -> int | None:
    """The class count the recipe itself gives (`data.num_labels`, else `data.id2label`'s); None: the data's."""
    return d.num_labels if d.num_labels is not None else len(d.id2label or {}) or None


def _check_colors(r: Recipe) -> list[str]:
    """`data.colors`: readable, distinct colours, each to a class id (below the known class count) or the ignore
    index; class ids straight from colours cannot be reduced again."""
    d = r.data
    if d.colors is None:
        return []
    num_labels = _known_num_labels(d)
    problems = color_problems(d.colors.items(), num_labels, d.ignore_index, "data.colors")
    if d.reduce_labels:
        problems.append("data.colors: colours give class ids directly; expected data.reduce_labels: false, found true")
    if d.label_map:
        problems.append(
            "data.colors: colours give class ids directly; expected no data.label_map (map a colour to another class "
            f"in data.colors), found {d.label_map}"
        )
    return problems


# Masks are 8- or 16-bit images: the raw values a label map can list.
_MAX_RAW_VALUE = (1 << 16) - 1


def _check_label_map(label_map: dict[int, int] | None, num_labels: int | None, ignore_index: int) -> list[str]:
    """`data.label_map`'s keys are raw mask values, its values class ids (checked against `num_labels` when the
    recipe knows it, else when the data loads) or the ignore index."""
    problems = []
    for raw, class_id in (label_map or {}).items():
        if not 0 <= raw <= _MAX_RAW_VALUE:
            problems.append(f"data.label_map: key {raw}: expected a raw mask value in 0..{_MAX_RAW_VALUE}, found {raw}")
        classes = f"0..{num_labels - 1}" if num_labels is not None else ">= 0"
        in_range = class_id >= 0 and (num_labels is None or class_id < num_labels)
        if class_id != ignore_index and not in_range:
            problems.append(
                f"data.label_map: {raw}: {class_id}: expected a class id ({classes}) or the ignore index "
                f"{ignore_index}, found {class_id}"
            )
    return problems


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


def _default_length(r: Recipe) -> None:
    # None in the schema, so that a recipe setting max_epochs is told apart from one leaving the default.
    if r.train.max_steps is None and r.train.max_epochs is None:
        r.train.max_steps = PAPER_MAX_STEPS


def _check_length(r: Recipe) -> list[str]:
    """How long a run is: max_steps or max_epochs (not both), and when early stopping ends it sooner."""
    t = r.train
    problems = _positive("train.max_epochs", t.max_epochs)
    problems += _positive("train.early_stopping_patience", t.early_stopping_patience)
    problems += _positive("train.early_stopping_min_delta", t.early_stopping_min_delta, allow_zero=True)
    if t.max_steps is not None and t.max_epochs is not None:
        problems.append(
            f"train.max_steps, train.max_epochs: expected one of them, found both (max_steps={t.max_steps}, "
            f"max_epochs={t.max_epochs}); to count in epochs, clear the steps: --set train.max_steps=null"
        )
    return problems


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
    return [
        f"logging.report_to: expected some of {list(TRACKERS)}, found {t!r}"
        for t in r.logging.report_to
        if t not in TRACKERS
    ]


def check_class_weights(weights: tuple[float, ...] | str | None, num_labels: int | None) -> list[str]:
    """The problems of a `loss.class_weights` value, its length checked when `num_labels` is known."""
    if weights is None:
        return []
    if isinstance(weights, str):
        return (
            []
            if weights == "auto"
            else [f"loss.class_weights: expected 'auto' or one weight per class, found {weights!r}"]
        )
    problems = _positive("loss.class_weights", weights, allow_zero=True)
    if not any(w > 0 for w in weights):
        problems.append(f"loss.class_weights: expected at least one weight above 0, found {list(weights)}")
    if num_labels is not None and len(weights) != num_labels:
        problems.append(
            f"loss.class_weights: expected {num_labels} weights, one per class, found {len(weights)}: {list(weights)}"
        )
    return problems


def _check_loss(r: Recipe) -> list[str]:
    loss, problems = r.loss, []
    for i, term in enumerate(loss.terms):
        key = f"loss.terms[{i}]"
        if not isinstance(term, LOSS_TERMS.get(term.name, ())):  # a recipe edited in Python
            problems.append(f"{key}.name: expected one of {list(LOSS_TERMS)} matching the entry, found {term.name!r}")
        problems += _positive(f"{key}.weight", term.weight)
        if isinstance(term, OHEMTerm):
            if term.thresh is not None and not 0 < term.thresh <= 1:
                problems.append(f"{key}.thresh: expected a probability in (0, 1] or null, found {term.thresh}")
            problems += _positive(f"{key}.min_kept", term.min_kept)
        if isinstance(term, FocalTerm):
            problems += _positive(f"{key}.gamma", term.gamma, allow_zero=True)
            if term.alpha is not None and not 0 <= term.alpha <= 1:
                problems.append(f"{key}.alpha: expected a fraction in [0, 1] or null, found {term.alpha}")
        problems += _positive(f"{key}.smooth", getattr(term, "smooth", None), allow_zero=True)
    num_labels = _known_num_labels(r.data)
    problems += check_class_weights(loss.class_weights, num_labels)
    names = [t.name for t in loss.active_terms]
    if loss.class_weights is not None and not set(names) & set(CLASS_WEIGHTED_TERMS):
        problems.append(
            f"loss.class_weights: only the {', '.join(CLASS_WEIGHTED_TERMS)} terms take class weights; "
            f"found the terms {names}"
        )
    return problems


_CHECKS = (
    _check_model,
    _check_peft,
    _check_data,
    _check_augment,
    _check_train,
    _check_length,
    _check_optim,
    _check_eval,
    _check_hub,
    _check_logging,
    _check_loss,
)
