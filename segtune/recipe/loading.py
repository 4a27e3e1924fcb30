"""Reading recipes: the defaults, a YAML file on top, dotted `--set` overrides on top of that, each value
coerced to its field's type.

    recipe = load_recipe("cityscapes.yaml", ["train.max_steps=100", "optim.lr=1e-4"])

The coercer is segtune's own, not OmegaConf structured configs (2.4) or pydantic (2.14), both tried on
this schema. Neither removes more code than it adds:
- Neither reads `crop_size: 512` as (512, 512), or `--set augment.crop_size=512,512` as a pair: both
  refuse them ("not a TupleConfig" / "Input should be a valid tuple"), so a pre-pass over the type hints
  would stay.
- Both turn YAML 1.1's `mixed_precision: no` and `data.check: off` wrong: OmegaConf into the string
  'False', pydantic into an error. The patches below would stay.
- Neither suggests a key ("did you mean 'optim.lr'?"), and both word their errors their own way
  ("Value 'ten' of type 'str' could not be converted to Integer"), so the suggestions stay and a
  translation into "expected int, found 'ten'" would be added.
- Each accepts what this one refuses, or the reverse: pydantic takes `optim.lr: true` as 1.0, and
  OmegaConf refuses `max_steps: 100.0`.
- pydantic would also become a dependency at run time (it is only a test one).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import RecipeError
from .schema import TAGGED_UNIONS, Recipe, all_keys, dotted_items
from .validation import validate

# The shipped recipes (the repository's recipes/, linked into the package).
RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


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
    """Apply a nested mapping onto the defaults, key by key, with type checks (not validated).

    Raises:
        RecipeError: as `set_value`, the key named after `source`.
    """
    recipe = Recipe()
    for key, value in dotted_items(values):
        set_value(recipe, key, value, f"{source}: {key}")
    return recipe


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
    "num_train_epochs": "train.max_epochs",
    "early_stopping_threshold": "train.early_stopping_min_delta",
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
    """`value` as type `hint` (int, float, bool, str, tuples, dicts, dataclasses, unions with None or each other).

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
    if dataclasses.is_dataclass(hint):
        return _coerce_dataclass(value, hint, where)
    return _coerce_scalar(value, hint, where)


def _coerce_tuple(value: Any, args: tuple, where: str) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and len(args) == 2 and args[1] is not Ellipsis:
        value = (value, value)  # `crop_size: 512` means 512 x 512
    if isinstance(value, str):
        value = value.replace(",", " ").split()  # `--set augment.crop_size=512,512`
    if not isinstance(value, (list, tuple)):
        raise RecipeError(f"{where}: expected a list, found {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        if dataclasses.is_dataclass(args[0]):  # a list of mappings: errors name the entry, `loss.terms[1].name`
            return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(coerce(v, args[0], where) for v in value)
    if len(value) != len(args):
        raise RecipeError(f"{where}: expected {len(args)} values, found {len(value)}: {list(value)}")
    return tuple(coerce(v, a, where) for v, a in zip(value, args))


def _coerce_dataclass(value: Any, cls: type, where: str) -> Any:
    """A mapping as an instance of dataclass `cls`, each field coerced; for a tagged union (`TAGGED_UNIONS`), of
    the class its tag names. A bare string stands for `{tag: string}` (`loss.terms=[ce, dice]`)."""
    tag, variants = TAGGED_UNIONS.get(cls, (None, {}))
    if tag is not None and isinstance(value, str):
        value = {tag: value}
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: expected a mapping, found {value!r}")
    if tag is not None:
        if value.get(tag) not in variants:
            found = repr(value[tag]) if tag in value else "none"
            raise RecipeError(f"{where}.{tag}: expected one of {list(variants)}, found {found}")
        cls = variants[value[tag]]
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in value:
        if key not in names:
            what = f"a {value[tag]!r} entry" if tag is not None else "this entry"
            raise RecipeError(f"{where}.{key}: unknown key for {what}; expected some of {names}")
    return cls(**{key: coerce(item, hints[key], f"{where}.{key}") for key, item in value.items()})


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
