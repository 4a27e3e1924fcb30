"""Recipes: shipped files, YAML + dotted overrides with type checks, and refusal of invalid values."""

import pytest
import yaml

from segtune.errors import RecipeError
from segtune.recipe import (
    MIT_VARIANTS,
    CrossEntropyTerm,
    DiceTerm,
    LovaszTerm,
    OHEMTerm,
    Recipe,
    all_keys,
    available_recipes,
    find_recipe,
    load_recipe,
    recipe_warnings,
)

SHIPPED = ["ade20k.yaml", "cityscapes.yaml", "coco_stuff.yaml", "demo.yaml", "folder.yaml", "sidewalk.yaml", "voc.yaml"]


def test_every_shipped_recipe_is_found_and_valid():
    assert available_recipes() == SHIPPED
    for name in SHIPPED:
        recipe = load_recipe(name)
        assert recipe.name == name.removesuffix(".yaml")
        assert load_recipe(name.removesuffix(".yaml")).to_dict() == recipe.to_dict()


def test_cityscapes_is_the_paper_recipe():
    r = load_recipe("cityscapes.yaml")
    assert (r.model.arch, r.model.variant, r.model.checkpoint) == ("mix_transformer", "mit-b0", "nvidia/mit-b0")
    assert r.augment.crop_size == (1024, 1024) and r.augment.ratio_range == (0.5, 2.0)
    assert r.augment.cat_max_ratio == 0.75 and r.augment.flip_prob == 0.5
    assert r.train.max_steps == 160_000 and r.train.reference_batch_size == 8
    assert (r.optim.lr, r.optim.weight_decay, r.optim.head_lr_mult) == (6e-5, 0.01, 10.0)
    assert (r.optim.betas, r.optim.warmup_steps, r.optim.poly_power) == ((0.9, 0.999), 1500, 1.0)
    assert r.optim.norm_weight_decay == 0.0
    assert (r.eval.mode, r.eval.crop_size, r.eval.stride) == ("slide", (1024, 1024), (768, 768))


def test_ade20k_reduces_labels_with_batch_16():
    r = load_recipe("ade20k.yaml")
    assert r.data.reduce_labels and r.augment.crop_size == (512, 512) and r.train.reference_batch_size == 16


def test_dotted_overrides_are_typed():
    r = load_recipe(
        "cityscapes.yaml",
        [
            "train.max_steps=100",
            "optim.lr=1e-4",
            "model.variant=mit-b5",
            "augment.crop_size=768",
            "eval.stride=[512,640]",
            "train.compile=true",
            "data.id2label={0: road, 1: car}",
            "data.num_labels=2",
        ],
    )
    assert r.train.max_steps == 100 and r.optim.lr == 1e-4 and isinstance(r.optim.lr, float)
    assert r.model.checkpoint == "nvidia/mit-b5"
    assert r.augment.crop_size == (768, 768) and r.eval.stride == (512, 640)
    assert r.train.compile is True and r.data.id2label == {0: "road", 1: "car"}


@pytest.mark.parametrize(
    "override, message",
    [
        # unknown keys get a hint, and values the wrong type are named
        ("optim.learning_rate=1e-4", r"unknown key 'optim.learning_rate'; did you mean 'optim.lr'\?"),
        ("train.batch_size=4", r"did you mean 'train.per_device_batch_size'\?"),
        ("model.varaint=mit-b2", r"did you mean 'model.variant'\?"),
        ("train.max_steps=ten", r"--set train.max_steps: expected int, found 'ten'"),
        ("train.max_steps=1.5", r"expected int, found 1.5"),
        ("augment.crop_size=[1,2,3]", r"expected 2 values, found 3"),
        ("train.max_steps", r"expected KEY=VALUE"),
        # values that cannot run are refused before work starts
        ("optim.lr=-0.1", r"optim.lr: expected positive, found -0.1"),
        ("augment.crop_size=0", r"augment.crop_size: expected positive, found \(0, 0\)"),
        ("eval.stride=2048", r"eval.stride: expected at most eval.crop_size \(1024, 1024\).*found \(2048, 2048\)"),
        ("model.arch=unet", r"model.arch: expected one of \['mix_transformer', 'segformer'\], found 'unet'"),
        ("train.mixed_precision=fp8", r"train.mixed_precision: expected one of"),
        ("hub.push=true", r"hub.repo_id: expected a repo id"),
        ("model.variant=mit-b9", r"model.variant: expected one of \['mit-b0', .*'mit-b5'\], found 'mit-b9'"),
        (
            "data.source=pascal",
            r"data.source: expected one of \['synthetic', .*'coco_stuff', 'coco'.*\], found 'pascal'",
        ),
        # a run's length: steps or epochs, not both (the recipe file sets max_steps)
        ("train.num_train_epochs=3", r"unknown key 'train.num_train_epochs'; did you mean 'train.max_epochs'\?"),
        (
            "train.max_epochs=3",
            r"train.max_steps, train.max_epochs: expected one of them, found both \(max_steps=160000, max_epochs=3\); "
            r"to count in epochs, clear the steps: --set train.max_steps=null",
        ),
        ("train.early_stopping_patience=0", r"train.early_stopping_patience: expected positive, found 0"),
        ("train.early_stopping_min_delta=-0.1", r"train.early_stopping_min_delta: expected non-negative, found -0.1"),
        # the loss section: a list of term mappings, each checked as a section is
        (
            "loss.terms=[ce, {name: dcie}]",
            r"--set loss.terms\[1\].name: expected one of \['ce', 'ohem', 'dice', 'lovasz', 'focal', 'jaccard'\], found 'dcie'",
        ),
        ("loss.terms=[{weight: 2}]", r"loss.terms\[0\].name: expected one of \[.*\], found none"),
        (
            "loss.terms=[{name: dice, gamma: 2}]",
            r"loss.terms\[0\].gamma: unknown key for a 'dice' entry; expected some of",
        ),
        ("loss.terms=[{name: focal, gamma: high}]", r"loss.terms\[0\].gamma: expected float, found 'high'"),
        ("loss.terms=[{name: ohem, min_kept: 1.5}]", r"loss.terms\[0\].min_kept: expected int, found 1.5"),
        ("loss.terms=[7]", r"loss.terms\[0\]: expected a mapping, found 7"),
        (
            "loss.terms=[{name: ohem, thresh: 1.5}]",
            r"loss.terms\[0\].thresh: expected a probability in \(0, 1\] or null",
        ),
        ("loss.terms=[{name: focal, alpha: -1}]", r"loss.terms\[0\].alpha: expected a fraction in \[0, 1\] or null"),
        ("loss.terms=[{name: dice, weight: 0}]", r"loss.terms\[0\].weight: expected positive, found 0.0"),
        ("loss.class_weights=median", r"loss.class_weights: expected 'auto' or one weight per class, found 'median'"),
        ("loss.class_weights=[1, -2]", r"loss.class_weights: expected non-negative, found \(1.0, -2.0\)"),
    ],
)
def test_bad_override_is_refused_naming_the_key(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("cityscapes.yaml", [override])


def test_variants_are_the_model_code_s_in_any_case():
    from segtune.models.mix_transformer import VARIANTS

    assert list(MIT_VARIANTS) == sorted(VARIANTS)
    assert load_recipe("demo.yaml", ["model.variant=MiT-B2"]).model.variant == "MiT-B2"  # as from_variant reads it


def test_warnings_name_what_runs_but_is_probably_not_meant():
    recipe = load_recipe("cityscapes.yaml", ["train.gradient_accumulation_steps=8"])  # 1 x 8: the paper's batch
    assert recipe_warnings(recipe, num_processes=1) == []
    [batch] = recipe_warnings(recipe, num_processes=2)
    assert batch.startswith("effective batch 16 (2 processes x 1 per device x 8 accumulation) differs")
    recipe.train.max_steps = 100  # a short trial of a long recipe
    [schedule] = recipe_warnings(recipe, num_processes=1)
    assert schedule == "optim.warmup_steps=1500 >= train.max_steps=100: the learning rate only warms up in this run"


def test_warnings_count_the_steps_max_epochs_makes():
    overrides = ["train.gradient_accumulation_steps=8", "train.max_steps=null", "train.max_epochs=2"]
    recipe = load_recipe("cityscapes.yaml", [*overrides, "train.early_stopping_patience=3"])
    assert recipe_warnings(recipe, num_processes=1, max_steps=1000) == [
        "optim.warmup_steps=1500 >= 1000 steps (train.max_epochs=2): the learning rate only warms up in this run",
        "train.early_stopping_patience=3 needs more than 3 evaluations, and this run has 1 (1000 steps "
        "(train.max_epochs=2), train.eval_steps=16000): it never stops early",
    ]
    recipe.train.eval_steps = 250  # 4 evaluations: the fourth can stop
    assert recipe_warnings(recipe, num_processes=1, max_steps=2000) == []


def test_max_steps_is_the_paper_s_unless_max_epochs_is_set(tmp_path):
    from segtune.commands.recipe import format_recipe

    assert Recipe().train.max_steps is None  # unset in the schema, so that max_epochs can be told apart
    assert load_recipe().train.max_steps == 160_000 and load_recipe().train.max_epochs is None
    assert not [line for line in format_recipe(load_recipe()).splitlines() if line.startswith("*")]
    for name in SHIPPED:
        written = yaml.safe_load(find_recipe(name).read_text())["train"]["max_steps"]
        assert (load_recipe(name).train.max_steps, load_recipe(name).train.max_epochs) == (written, None)
    recipe = load_recipe("sidewalk.yaml", ["train.max_steps=null", "train.max_epochs=3"])
    recipe.save(tmp_path / "recipe.yaml")
    again = load_recipe(tmp_path / "recipe.yaml")
    assert (again.train.max_steps, again.train.max_epochs) == (None, 3) and again.to_dict() == recipe.to_dict()


def test_several_problems_are_reported_together():
    with pytest.raises(RecipeError) as error:
        load_recipe("cityscapes.yaml", ["optim.lr=-1", "model.arch=unet"])
    assert "optim.lr" in str(error.value) and "model.arch" in str(error.value)


def test_missing_recipe_lists_the_shipped_ones():
    with pytest.raises(RecipeError, match=r"recipe 'citiscapes.yaml' not found.*'cityscapes.yaml'"):
        find_recipe("citiscapes.yaml")


def test_yaml_file_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_stepz: 10\n")
    with pytest.raises(RecipeError, match=rf"{bad}: train.max_stepz: unknown key.*'train.max_steps'"):
        load_recipe(bad)
    bad.write_text("train: [1, 2\n")
    with pytest.raises(RecipeError, match=rf"{bad}: not valid YAML"):
        load_recipe(bad)


def test_resolved_recipe_round_trips_through_yaml(tmp_path):
    recipe = load_recipe("ade20k.yaml", ["train.max_steps=7"])
    recipe.save(tmp_path / "recipe.yaml")
    again = load_recipe(tmp_path / "recipe.yaml")
    assert again.to_dict() == recipe.to_dict()
    assert set(yaml.safe_load((tmp_path / "recipe.yaml").read_text())) == {f.split(".")[0] for f in all_keys()}


def test_yaml_no_stays_a_string_for_text_fields(tmp_path):
    assert load_recipe("demo.yaml", ["train.mixed_precision=no"]).train.mixed_precision == "no"
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  mixed_precision: no\n")
    assert load_recipe(path).train.mixed_precision == "no"


def test_defaults_live_in_one_place():
    assert Recipe().optim.lr == 6e-5 and Recipe().augment.ratio_range == (0.5, 2.0)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_builds_its_model_from_random_weights(name):
    from segtune.models.build import build_model

    recipe = load_recipe(name, ["model.init=random"])
    labels = {i: f"class_{i}" for i in range({"cityscapes.yaml": 19, "ade20k.yaml": 150}.get(name, 6))}
    model = build_model(recipe.model, labels)
    assert type(model).__name__ == "MixTransformerForSemanticSegmentation" and model.training
    assert model.config.num_labels == len(labels) and model.config.depths == [2, 2, 2, 2]
    assert model.config.drop_path_rate == recipe.model.drop_path_rate
    segformer = build_model(load_recipe(name, ["model.init=random", "model.arch=segformer"]).model, labels)
    assert type(segformer).__name__ == "SegformerForSemanticSegmentation"


def test_the_loss_section_reads_terms_with_their_own_parameters(tmp_path):
    path = tmp_path / "weighted.yaml"
    path.write_text(
        "loss:\n  terms: [{name: ce}, {name: dice, weight: 0.5, smooth: 1}, {name: ohem, thresh: null}]\n"
        "  class_weights: auto\n"
    )
    loss = load_recipe(path).loss
    assert loss.terms == (CrossEntropyTerm(), DiceTerm(weight=0.5, smooth=1.0), OHEMTerm(thresh=None))
    assert loss.class_weights == "auto" and loss.active
    recipe = load_recipe(path, ["data.num_labels=3", "loss.class_weights=[1, 2.5, 0]"])
    assert recipe.loss.class_weights == (1.0, 2.5, 0.0)
    recipe.save(tmp_path / "saved.yaml")
    assert load_recipe(tmp_path / "saved.yaml").to_dict() == recipe.to_dict()
    assert load_recipe(None, ["loss.terms=[ce, lovasz]"]).loss.terms == (CrossEntropyTerm(), LovaszTerm())
    assert not Recipe().loss.active and load_recipe(None, ["loss.class_weights=auto"]).loss.active_terms == (
        CrossEntropyTerm(),
    )
    path.write_text("loss:\n  terms: [{name: ce}, {name: dcie}]\n")
    with pytest.raises(RecipeError, match=rf"{path}: loss.terms\[1\].name: expected one of \[.*\], found 'dcie'"):
        load_recipe(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["loss.terms=[dice, lovasz]", "loss.class_weights=auto"],
            r"only the ce, ohem, focal terms take class weights",
        ),
        (
            ["data.num_labels=3", "loss.class_weights=[1, 2]"],
            r"expected 3 weights, one per class, found 2: \[1.0, 2.0\]",
        ),
        (["loss.class_weights=[0, 0]"], r"expected at least one weight above 0"),
    ],
)
def test_class_weights_that_cannot_apply_are_refused(overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("demo.yaml", overrides)


def test_label_map_is_read_from_set_and_yaml_and_saved_as_one_mapping(tmp_path):
    recipe = load_recipe(None, ["data.num_labels=2", "data.label_map={255: 1, '128': 255}"])
    assert recipe.data.label_map == {255: 1, 128: 255}  # string keys read as raw values
    assert recipe.flat()["data.label_map"] == {255: 1, 128: 255}
    path = tmp_path / "saved.yaml"
    recipe.save(path)
    assert load_recipe(path).data.label_map == {255: 1, 128: 255}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["data.label_map={70000: 1}"],
            "data.label_map: key 70000: expected a raw mask value in 0..65535, found 70000",
        ),
        (["data.label_map={-1: 1}"], "data.label_map: key -1: expected a raw mask value in 0..65535, found -1"),
        (
            ["data.num_labels=2", "data.label_map={255: 2}"],
            "data.label_map: 255: 2: expected a class id (0..1) or the ignore index 255, found 2",
        ),
        (
            ["data.label_map={255: -3}"],
            "data.label_map: 255: -3: expected a class id (>= 0) or the ignore index 255, found -3",
        ),
        (["data.label_map={1.5: 1}"], "--set data.label_map: expected int, found 1.5"),
        (["data.label_map=[255, 1]"], "--set data.label_map: expected a mapping, found [255, 1]"),
    ],
)
def test_label_map_errors_name_the_key(overrides, message):
    with pytest.raises(RecipeError) as error:
        load_recipe(None, overrides)
    assert message in str(error.value)


def test_label_map_may_map_to_the_ignore_index_and_to_another_ignore_index():
    assert load_recipe(None, ["data.num_labels=2", "data.label_map={7: 255}"]).data.label_map == {7: 255}
    recipe = load_recipe(None, ["data.ignore_index=-100", "data.num_labels=2", "data.label_map={255: -100}"])
    assert recipe.data.label_map == {255: -100}


def test_resume_refuses_a_checkpoint_trained_with_another_label_map(tmp_path):
    from segtune.errors import TrainingError
    from segtune.train.checkpoints import check_same_recipe

    load_recipe(None, ["data.num_labels=2", "data.label_map={255: 1}"]).save(tmp_path / "recipe.yaml")
    check_same_recipe(tmp_path, load_recipe(None, ["data.num_labels=2", "data.label_map={255: 1}"]))
    with pytest.raises(TrainingError, match=r"data.label_map: checkpoint \{255: 1\}, now None"):
        check_same_recipe(tmp_path, load_recipe(None, ["data.num_labels=2"]))
