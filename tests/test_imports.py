"""The package's shape, read from its source: modules import each other one way (no cycles, the imports inside
functions counted), and a module's private names stay its own."""

import ast
from pathlib import Path

import inpaint

PACKAGE = Path(inpaint.__file__).parent


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node that runs: the body of `if TYPE_CHECKING:` only names types for the checker."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    return list(ast.walk(tree))


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` imports, at its top or inside its functions."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                else node.module
            # `from . import x` imports the module x; `from .m import x` imports m (x is one of its names).
            targets |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
    return {target for target in targets if target in known and target != name}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (its modules, the first repeated at the end), or None."""
    done, path = set(), []

    def visit(name: str) -> list[str] | None:
        if name in path:
            return path[path.index(name):] + [name]
        if name in done:
            return None
        path.append(name)
        for target in sorted(graph[name]):
            if cycle := visit(target):
                return cycle
        path.pop()
        done.add(name)
        return None

    for name in sorted(graph):
        if cycle := visit(name):
            return cycle
    return None


def test_the_graph_sees_imports_at_the_top_and_inside_functions():
    graph = import_graph()
    assert "inpaint.api.deps" in graph["inpaint.api.generate"]  # `from .deps import ...`
    assert "inpaint.api.compat.openai" in graph["inpaint.api.guards"]  # `from .compat import openai`
    assert "inpaint.torchscript" in graph["inpaint.families.erasers"]  # inside a method
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def private_uses(source: str, where: str) -> list[str]:
    """`from m import _x` and `m._x` in a module's source, where m is one of the package's modules or names."""
    tree = ast.parse(source)
    ours, uses = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("inpaint")):
            for alias in node.names:
                ours.add(alias.asname or alias.name)
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    uses.append(f"{where}:{node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}")
        elif isinstance(node, ast.Import):
            ours |= {alias.asname or alias.name.split(".")[0] for alias in node.names if alias.name.startswith("inpaint")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in ours:
                uses.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return sorted(uses)


def test_private_names_stay_in_their_module():
    seen = private_uses("from .jobs import _queue, record\nfrom inpaint import ui\nui.device._x\nui._y\nself._z\n"
                        "from . import settings\nsettings._int('X', 1, 0, 2)\n", "m.py")
    assert seen == ["m.py:1: from .jobs import _queue", "m.py:3: ui.device._x", "m.py:4: ui._y", "m.py:7: settings._int"]
    uses = [use for name, path in modules().items() for use in private_uses(path.read_text(), name)]
    assert uses == [], "\n".join(uses)
