"""The registry's rooms import one another in one direction, at the top of each module, and the other layers come
in through its face (read from the syntax tree, as tests/test_layering.py does).

* no import of a registry module inside a function of another (a lazy import of ``projects`` or of a heavy
  library stays allowed: serving imports the registry and must not load training code);
* the registry's modules form no circle;
* ``serving`` and ``app`` import registry names only as ``from registry import X``, X on its face (``__all__``);
* "version number or alias" is one rule (``registry.store``): no ``isdigit()`` in ``serving`` or ``registry`` besides.
"""

from __future__ import annotations

import ast
from pathlib import Path

import registry

ROOT = Path(__file__).resolve().parents[1]
ROOMS = sorted(p.stem for p in (ROOT / "registry").glob("*.py") if p.stem != "__init__")
REACHED_AS_MODULE = {"rollout"}  # `from registry import rollout`: its start/current/stop are not on the face yet


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _rooms_imported(node: ast.AST) -> set[str]:
    """The registry modules an import statement names (``from registry import views`` names ``views``)."""
    if isinstance(node, ast.Import):
        return {a.name.split(".")[1] for a in node.names if a.name.startswith("registry.")}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module.startswith("registry."):
            return {node.module.split(".")[1]}
        if node.module == "registry":
            return {a.name for a in node.names if a.name in ROOMS}
    return set()


def test_no_registry_module_imports_another_inside_a_function():
    found = []
    for room in ROOMS:
        path = ROOT / "registry" / f"{room}.py"
        for function in ast.walk(_tree(path)):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found += [f"registry/{room}.py:{node.lineno} imports registry.{name} in {function.name}()"
                          for node in ast.walk(function) for name in sorted(_rooms_imported(node))]
    assert found == []


def test_the_registry_modules_form_no_circle():
    graph = {room: set().union(*[_rooms_imported(n) for n in ast.walk(_tree(ROOT / "registry" / f"{room}.py"))])
             for room in ROOMS}
    done: set[str] = set()

    def visit(room: str, path: tuple[str, ...]) -> None:
        assert room not in path, " -> ".join(path + (room,))
        if room in done:
            return
        for other in sorted(graph[room]):
            visit(other, path + (room,))
        done.add(room)

    for room in ROOMS:
        visit(room, ())


def test_serving_and_app_come_in_through_the_face():
    face = set(registry.__all__)
    found = []
    for package in ("serving", "app"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(_tree(path)):
                where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
                if isinstance(node, ast.Import):
                    found += [f"{where} imports {a.name}" for a in node.names if a.name.startswith("registry.")]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    if node.module.startswith("registry."):
                        found.append(f"{where} imports from {node.module}")
                    elif node.module == "registry":
                        found += [f"{where} imports registry.{a.name}, not on the face" for a in node.names
                                  if a.name not in face and a.name not in REACHED_AS_MODULE]
    assert found == []


def test_number_or_alias_is_decided_in_one_place():
    found = [f"{path.relative_to(ROOT)}:{node.lineno}"
             for package in ("serving", "registry") for path in sorted((ROOT / package).rglob("*.py"))
             if path.name != "store.py"
             for node in ast.walk(_tree(path))
             if isinstance(node, ast.Attribute) and node.attr == "isdigit"]
    assert found == []
