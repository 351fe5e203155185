"""The package's shape: no import cycles, private names in one module, each default written once."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
import yaml

import lightning_clr
from lightning_clr import LRRangeTest, schedules

PACKAGE = Path(lightning_clr.__file__).parent
CONF = PACKAGE.parent / "conf"
if not CONF.is_dir():  # an installed wheel ships conf/ as lightning_clr/conf
    CONF = PACKAGE / "conf"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "conf" not in p.relative_to(PACKAGE).parts}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports, anywhere in the file (``from pkg import mod`` counts as mod)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    # the package's __init__ only re-exports: an import of a name from it is an import of its home module
    return {name: _imports(path, name, known) - {"lightning_clr"} for name, path in modules.items()
            if name != "lightning_clr"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node], _ = 2, stack.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_module_imports_one_that_imports_it_back():
    graph = _graph()
    assert graph["lightning_clr.range_test.callback"] >= {"lightning_clr.range_test.sweep",
                                                          "lightning_clr.range_test.result"}  # the parser sees imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


#: the layers, top first: a module may import its own layer or a lower one, never a higher one
LAYERS = {
    "run": 0, "cli": 0,
    "callbacks": 1, "data": 1, "models": 1,
    "range_test": 2,
    "selection": 3, "schedules": 3,
    "_compat": 4,
}


def _layer(module: str) -> str:
    return module.split(".")[1]


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if LAYERS[_layer(b)] < LAYERS[_layer(a)])


def test_imports_run_one_way_cli_callbacks_range_test_selection_schedules():
    graph = _graph()
    assert {_layer(m) for m in graph} <= set(LAYERS), "a new top-level entry needs its place in LAYERS"
    assert _upward_imports(graph) == []


def test_the_direction_check_finds_an_upward_import():
    graph = {"lightning_clr.selection.rules": {"lightning_clr.range_test.sweep"},
             "lightning_clr.cli.main": {"lightning_clr.range_test.callback"}}
    assert _upward_imports(graph) == ["lightning_clr.selection.rules -> lightning_clr.range_test.sweep"]


def test_the_package_top_shows_its_layers():
    entries = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__" and not p.name.endswith(".egg-info")}
    entries -= {"__init__.py", "_compat.py", "conf", "recipes"}  # conf/, recipes/: only inside an installed wheel
    assert len(entries) <= 8, sorted(entries)


def test_every_package_of_the_source_tree_is_in_the_wheel():
    """pyproject.toml names the packages (two of them come from other folders): none may be missing."""
    pyproject = PACKAGE.parent / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("an installed wheel has no pyproject.toml beside it")
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["packages"])
    found = {_module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    assert found - listed == set(), f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"


PRIVATE = ("_ResultCollection", "epoch_loop._results", "_logger_connector", "_current_fx_name", "_combined_loader",
           "_set_sampler_epoch", "_get_iterator", "_update_count", "_computed")


@pytest.mark.parametrize("name", PRIVATE)
def test_private_names_live_in_compat_only(name):
    users = sorted(p.name for p in PACKAGE.rglob("*.py") if name in p.read_text() and p.name != "_compat.py")
    assert (PACKAGE / "_compat.py").read_text().count(name) >= 1
    assert users == [], f"{name} used outside _compat.py in {users}"


def _yaml_values(path: Path) -> dict:
    node = yaml.safe_load(path.read_text())
    return {k: v for k, v in node.items() if k not in ("defaults", "_target_")}


def _same(yaml_value, default) -> bool:
    if isinstance(default, tuple):
        default = list(default)
    if isinstance(default, float) or isinstance(yaml_value, float):
        return yaml_value is not None and default is not None and float(yaml_value) == float(default)
    return yaml_value == default


def test_finder_yaml_defaults_equal_the_constructor():
    params = inspect.signature(LRRangeTest.__init__).parameters
    values = _yaml_values(CONF / "finder" / "default.yaml")
    keyword = {n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD} - {"self", "schedule"}
    assert set(values) == keyword  # every argument is documented in the YAML, and no other key
    for key, value in values.items():
        assert _same(value, params[key].default), f"conf/finder/default.yaml {key}: {value!r} != {params[key].default!r}"


@pytest.mark.parametrize("name", sorted(schedules.SCHEDULES))
def test_schedule_yaml_defaults_equal_the_spec(name):
    spec = schedules.SCHEDULES[name]
    fields = {f.name: f.default for f in dataclasses.fields(spec)}
    for key, value in _yaml_values(CONF / "schedule" / f"{name}.yaml").items():
        assert key in fields, f"conf/schedule/{name}.yaml: {key} is not a field of {spec.__name__}"
        assert _same(value, fields[key]), f"conf/schedule/{name}.yaml {key}: {value!r} != {fields[key]!r}"
