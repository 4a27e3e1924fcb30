"""Every check of a recipe: `validate` refuses what cannot run, `recipe_warnings` names what runs but is
probably not meant.

Validation reads only the schema (choices, MiT variants, data sources), so a recipe is checked before
torch, the model code or any data is imported.
"""

from __future__ import annotations

from typing import Any

from ..errors import RecipeError
from .schema import (
    ARCHS,
    CHECK_LEVELS,
    COMPILE_MODES,
    DATA_SOURCES,
    EVAL_MODES,
    INITS,
    MIT_VARIANTS,
    PEFT_METHODS,
    PRECISIONS,
    TRACKERS,
    Recipe,
)


def validate(recipe: Recipe) -> None:
    """Refuse a recipe that cannot run, before any work starts.

    Raises:
        RecipeError: listing every invalid value, each with its key, what was expected and what was found.
    """
    problems = [p for check in _CHECKS for p in check(recipe)]
    if problems:
        raise RecipeError("invalid recipe:\n  " + "\n  ".join(problems))


def recipe_warnings(recipe: Recipe, num_processes: int) -> list[str]:
    """What a valid recipe probably does not mean, for a run on `num_processes` processes.

    Returns:
        One message per finding: an effective batch other than the one the learning rate was set for, and
        a warmup that never ends (a short trial of a long recipe, `--set train.max_steps=100`).
    """
    t, o = recipe.train, recipe.optim
    warnings = []
    effective = num_processes * t.per_device_batch_size * t.gradient_accumulation_steps
    if effective != t.reference_batch_size:
        warnings.append(
            f"effective batch {effective} ({num_processes} processes x {t.per_device_batch_size} per device x "
            f"{t.gradient_accumulation_steps} accumulation) differs from the recipe's reference batch "
            f"{t.reference_batch_size}; the recipe's learning rate was set for {t.reference_batch_size}"
        )
    if o.warmup_steps >= t.max_steps:
        warnings.append(
            f"optim.warmup_steps={o.warmup_steps} >= train.max_steps={t.max_steps}: "
            "the learning rate only warms up in this run"
        )
    return warnings


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
    return [
        f"logging.report_to: expected some of {list(TRACKERS)}, found {t!r}"
        for t in r.logging.report_to
        if t not in TRACKERS
    ]


_CHECKS = (
    _check_model,
    _check_peft,
    _check_data,
    _check_augment,
    _check_train,
    _check_optim,
    _check_eval,
    _check_hub,
    _check_logging,
)
