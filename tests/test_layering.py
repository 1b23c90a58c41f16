"""The packages of modules/ import only downward, without cycles, and inference never loads training code.

Imports are read with `ast` from every file, including the ones inside functions, so a lazy import
counts as much as one at the top of a file.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

MODULES = Path(__file__).resolve().parents[1] / "modules"

# What each package may import, besides modules/errors.py (which imports nothing): the README's code map.
MAY_IMPORT: Dict[str, Set[str]] = {
    "config": set(),
    "storage": set(),
    "runtime": set(),
    "data": {"config", "storage", "runtime"},
    "models": {"config", "runtime"},
    "surrogate": {"config", "storage", "runtime", "data", "models"},
    "training": {"config", "storage", "runtime", "data", "models", "surrogate"},
    "evaluation": {"config", "storage", "runtime", "data", "models", "surrogate"},
    "commands": {"config", "storage", "runtime", "data", "models", "surrogate", "training", "evaluation"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(MODULES.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Set[str]:
    """Every modules.* name `path` imports, resolved to the module (not the imported attribute)."""
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("modules")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("modules"):
            for alias in node.names:  # `from modules.data import scaling` imports a module
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if (MODULES.parent / submodule.replace(".", "/")).with_suffix(".py").is_file()
                          else node.module)
    return found


def import_graph() -> Dict[str, Set[str]]:
    return {module_name(path): imported_modules(path) for path in MODULES.rglob("*.py")}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (MODULES / parts[-1]).is_dir() else ""


def test_only_errors_lives_at_the_root_and_every_package_is_in_the_map():
    assert sorted(path.name for path in MODULES.glob("*.py")) == ["__init__.py", "errors.py"]
    assert sorted(path.name for path in MODULES.iterdir() if path.is_dir() and path.name != "__pycache__") == \
        sorted(MAY_IMPORT)
    assert import_graph()["modules.errors"] == set()


def test_each_package_imports_only_the_packages_below_it():
    wrong: List[str] = []
    for module, imports in import_graph().items():
        package = package_of(module)
        for target in imports:
            other = package_of(target)
            if other not in ("", package) and other not in MAY_IMPORT[package]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_import_cycles_between_modules():
    graph = import_graph()
    state: Dict[str, str] = {}
    cycles: List[List[str]] = []

    def visit(module: str, trail: List[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_predict_and_reconstruct_never_load_training_code():
    graph = import_graph()
    for command in ("modules.commands.predict", "modules.commands.reconstruct"):
        reached, todo = set(), [command]
        while todo:
            module = todo.pop()
            if module not in reached:
                reached.add(module)
                todo += graph.get(module, ())
        assert sorted(module for module in reached if module.startswith("modules.training")) == [], command
