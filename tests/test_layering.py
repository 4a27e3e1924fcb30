"""The package's shape: light lower layers, no import cycles, command lines that shadow nothing."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import segtune

PACKAGE = Path(segtune.__file__).parent


def _modules_after(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `statement`."""
    code = f"{statement}; import sys; print(' '.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def _imported_after(statement: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after running `statement`."""
    return {m.split(".")[0] for m in _modules_after(statement)}


@pytest.mark.parametrize("statement", ["import segtune.recipe", "import segtune.errors", "import segtune"])
def test_the_recipe_layer_imports_nothing_heavy(statement):
    loaded = _imported_after(statement)
    assert not loaded & {"torch", "transformers", "datasets", "accelerate", "torchvision", "evaluate"}, loaded


def test_the_source_registry_imports_nothing_heavy():
    """Recipe validation reads the registry: importing it must not even load NumPy or PIL."""
    loaded = _imported_after("import segtune.data.sources")
    assert not loaded & {"numpy", "torch", "datasets", "PIL", "transformers"}, loaded


def test_the_command_line_imports_nothing_heavy_until_a_command_runs():
    """`segtune --help`, and a recipe refused by `segtune train`, answer without loading torch."""
    loaded = _imported_after(
        "from segtune.commands import build_parser; build_parser().parse_args(['train', '--recipe', 'x'])"
    )
    assert not loaded & {"torch", "transformers", "datasets", "accelerate", "numpy", "PIL"}, loaded


def test_validating_a_recipe_imports_nothing_heavy():
    loaded = _imported_after("from segtune.recipe import load_recipe; load_recipe('cityscapes.yaml')")
    assert not loaded & {"torch", "transformers", "datasets", "accelerate"}, loaded


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Line numbers inside `if TYPE_CHECKING:` blocks (never executed)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            lines |= {n.lineno for child in node.body for n in ast.walk(child) if hasattr(n, "lineno")}
    return lines


def import_graph() -> dict[str, set[str]]:
    """segtune module -> the segtune modules it imports (at module level or inside functions)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        edges = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, path.name == "__init__.py", node)
                edges.add(target)
                edges |= {f"{target}.{alias.name}" for alias in node.names}
        graph[name] = {edge for edge in edges if edge in modules and edge != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return path[path.index(child) :] + [child] if child in path else [node, child]
            if child not in state:
                found = visit(child, [*path, child])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_import_cycles():
    graph = import_graph()
    assert "segtune.train.loop" in graph and "segtune.models.auto" in graph["segtune.models.build"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _modules_of(graph: dict[str, set[str]], name: str) -> list[str]:
    """`name` and, for a package, every module in it."""
    return [m for m in graph if m == name or m.startswith(f"{name}.")]


def test_lower_layers_import_nothing_above_them():
    graph = import_graph()
    for low in ("segtune.errors", "segtune.recipe", "segtune.run_dir", "segtune.lazy"):
        for module in _modules_of(graph, low):
            above = {
                m for m in graph[module] if m.startswith(("segtune.train", "segtune.models", "segtune.evaluation"))
            }
            assert not above, (module, above)
    assert not {m for m in graph["segtune.commands.evaluate"] if m.startswith("segtune.train")}  # uses evaluation.py


def test_the_recipe_imports_nothing_from_data():
    """Source names are schema data: the recipe never reaches down into segtune.data, not even in a function."""
    graph = import_graph()
    recipe_modules = _modules_of(graph, "segtune.recipe")
    assert {"segtune.recipe.schema", "segtune.recipe.loading", "segtune.recipe.validation"} < set(recipe_modules)
    for module in recipe_modules:
        assert not {m for m in graph[module] if m.startswith("segtune.data")}, module
    assert "segtune.recipe" in graph["segtune.data.sources"]  # the one direction: data reads the recipe
    loaded = _modules_after("from segtune.recipe import load_recipe; load_recipe('ade20k.yaml')")
    assert "segtune.recipe.validation" in loaded and not {m for m in loaded if m.startswith("segtune.data")}, loaded


def test_every_data_source_of_the_schema_has_a_loader():
    from segtune.data.sources import SOURCES
    from segtune.recipe import DATA_SOURCES

    assert list(DATA_SOURCES) == list(SOURCES)


def test_command_line_modules_shadow_no_library_function():
    import segtune.predict as module

    assert inspect.ismodule(module) and inspect.ismodule(segtune.predict)
    assert inspect.isfunction(segtune.segment) and inspect.isclass(segtune.MixTransformerConfig)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        segtune.nope  # noqa: B018


def test_auto_registration_lives_in_one_module():
    registering = sorted(
        _module_name(p) for p in PACKAGE.rglob("*.py") if ".register(" in p.read_text() and "Auto" in p.read_text()
    )
    assert registering == ["segtune.models.auto"]


def _lazy_packages() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("__init__.py") if "lazy_exports(" in p.read_text())


@pytest.mark.parametrize("init", _lazy_packages(), ids=lambda p: _module_name(p))
def test_lazy_exports_are_visible_to_type_checkers(init):
    """Each lazy name is also imported under `if TYPE_CHECKING:`, from the module `lazy_exports` loads it from."""
    tree = ast.parse(init.read_text())
    exports = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_EXPORTS"
    )
    checked = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for statement in node.body:
                checked |= {alias.name: "." * statement.level + statement.module for alias in statement.names}
    assert {name: checked.get(name) for name in exports} == exports
