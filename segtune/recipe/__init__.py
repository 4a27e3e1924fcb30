"""Typed recipes: every default in one place, a YAML file on top, dotted `--set` overrides on top of that.

    recipe = load_recipe("cityscapes.yaml", ["train.max_steps=100", "optim.lr=1e-4"])

| module        | concern                                                                         |
|---------------|---------------------------------------------------------------------------------|
| schema.py     | the dataclasses and their defaults (the paper's), the choices, the data sources |
| loading.py    | finding and reading YAML, `--set` overrides, type coercion, unknown-key hints   |
| validation.py | every check: `validate` refuses what cannot run, `recipe_warnings` warns        |

Everything is validated before any work starts. The package imports nothing heavy (no torch, numpy or
datasets) and nothing from `segtune.data` or `segtune.models`: the command lines check a recipe first.
"""

from .loading import RECIPES_DIR, available_recipes, coerce, find_recipe, load_recipe, recipe_from_dict, set_value
from .schema import (
    ARCHS,
    CHECK_LEVELS,
    CLASS_WEIGHTED_TERMS,
    COMPILE_MODES,
    DATA_SOURCES,
    EVAL_MODES,
    INITS,
    LOSS_TERMS,
    MAPPING_KEYS,
    MIT_VARIANTS,
    PEFT_METHODS,
    PRECISIONS,
    TAGGED_UNIONS,
    TRACKERS,
    AugmentConfig,
    CrossEntropyTerm,
    DataConfig,
    DiceTerm,
    EvalConfig,
    FocalTerm,
    HubConfig,
    JaccardTerm,
    LoggingConfig,
    LossConfig,
    LossTerm,
    LovaszTerm,
    ModelConfig,
    OHEMTerm,
    OptimConfig,
    PeftConfig,
    Recipe,
    SourceSpec,
    SyntheticConfig,
    TrainConfig,
    all_keys,
)
from .validation import recipe_warnings, validate

__all__ = [
    "ARCHS",
    "CHECK_LEVELS",
    "CLASS_WEIGHTED_TERMS",
    "COMPILE_MODES",
    "DATA_SOURCES",
    "EVAL_MODES",
    "INITS",
    "LOSS_TERMS",
    "MAPPING_KEYS",
    "MIT_VARIANTS",
    "PEFT_METHODS",
    "PRECISIONS",
    "RECIPES_DIR",
    "TAGGED_UNIONS",
    "TRACKERS",
    "AugmentConfig",
    "CrossEntropyTerm",
    "DataConfig",
    "DiceTerm",
    "EvalConfig",
    "FocalTerm",
    "HubConfig",
    "JaccardTerm",
    "LoggingConfig",
    "LossConfig",
    "LossTerm",
    "LovaszTerm",
    "ModelConfig",
    "OHEMTerm",
    "OptimConfig",
    "PeftConfig",
    "Recipe",
    "SourceSpec",
    "SyntheticConfig",
    "TrainConfig",
    "all_keys",
    "available_recipes",
    "coerce",
    "find_recipe",
    "load_recipe",
    "recipe_from_dict",
    "recipe_warnings",
    "set_value",
    "validate",
]
