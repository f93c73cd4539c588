"""The layers of docs/architecture.md, checked over the package's imports (every import, also those inside
functions): no import cycle, no upward import, the layer-1 packages independent of each other, no
``_private`` name used outside its package, and every import inside a function explained by a comment."""

from __future__ import annotations

import ast
import os
import re
from collections import defaultdict

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
PACKAGE = "fashionlens"

#: The layers of docs/architecture.md: the first name under ``fashionlens`` -> layer.
LAYERS = {
    "config": 0, "utils": 0, "files": 0, "recipes": 0,
    "data": 1, "models": 1, "losses": 1, "index": 1,
    "training": 2, "evaluation": 2, "hierarchy": 2, "audit": 2, "baselines": 2, "rerank": 2,
    "runs": 3, "inference": 3, "export": 3, "embedding": 3, "catalog": 3, "demo": 3, "openworld": 3,
    "cli": 4, "serving": 4, "__main__": 4,
}
#: The package's own ``__init__`` re-exports the data readers: it is as high as layer 1.
ROOT_LAYER = 1
#: Layer-1 packages do not import each other (layer 0 only).
INDEPENDENT = 1


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for folder, _, files in os.walk(os.path.join(SRC, PACKAGE)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, SRC)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: str, module: str) -> list[tuple[str, list[str], ast.stmt, bool]]:
    """(imported module, names taken from it, the statement, whether it is inside a function) of a file."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, [], child, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + ([base] if base else []))
                found.append((base, [a.name for a in child.names], child, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def _target(imported: str, names: list[str]) -> list[str]:
    """The package modules an import statement loads (``from pkg import mod`` loads ``pkg.mod``)."""
    if not (imported == PACKAGE or imported.startswith(PACKAGE + ".")):
        return []
    subs = [f"{imported}.{n}" for n in names if f"{imported}.{n}" in MODULES]
    return subs or [imported]


def _layer(module: str) -> int:
    parts = module.split(".")
    return ROOT_LAYER if len(parts) == 1 else LAYERS[parts[1]]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for imported, names, _, _ in _imports(path, module):
            graph[module].update(t for t in _target(imported, names) if t != module)
    return graph


def test_every_module_has_a_layer():
    unknown = sorted({m.split(".")[1] for m in MODULES if "." in m and m.split(".")[1] not in LAYERS})
    assert not unknown, f"modules without a layer in docs/architecture.md (and LAYERS here): {unknown}"


def test_no_upward_import_and_layer1_packages_independent():
    wrong = []
    for module, targets in _graph().items():
        for target in targets:
            low, high = _layer(module), _layer(target)
            if high > low:
                wrong.append(f"{module} (layer {low}) imports {target} (layer {high})")
            elif (low == high == INDEPENDENT and module != PACKAGE and target != PACKAGE
                  and module.split(".")[:2] != target.split(".")[:2]):
                wrong.append(f"{module} imports {target}: layer-1 packages are independent of each other")
    assert not wrong, "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (function-local imports included):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _private_uses(path: str, module: str) -> list[str]:
    """``_private`` modules or names of another top-level package (or of the package from outside it)."""
    own = module.split(".")[:2]
    found = []
    for imported, names, node, _ in _imports(path, module):
        if not (imported == PACKAGE or imported.startswith(PACKAGE + ".")):
            continue
        parts = imported.split(".")
        if parts[:2] == own and len(own) == 2:
            continue  # inside its own package
        private = [p for p in parts[1:] if p.startswith("_") and not p.startswith("__")]
        private += [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private:
            found.append(f"{path}:{node.lineno}: {imported} {', '.join(private)}")
    return found


def _outside_files() -> list[str]:
    files = []
    for folder in ("tests", "benchmarks", "tools"):
        for base, _, names in os.walk(os.path.join(ROOT, folder)):
            files += [os.path.join(base, n) for n in names if n.endswith(".py")]
    return files


def test_private_names_stay_inside_their_package():
    found = []
    for module, path in MODULES.items():
        found += _private_uses(path, module)
    for path in _outside_files():
        found += _private_uses(path, "outside")
    assert not found, "private names used outside their package:\n" + "\n".join(found)


LAZY = re.compile(r"#.*\blazy\b")


def test_function_local_imports_say_why():
    """An import inside a function needs a ``# lazy: <reason>`` comment on its line or just above its block."""
    unexplained = []
    for module, path in MODULES.items():
        lines = open(path, encoding="utf-8").read().splitlines()
        for _, _, node, in_function in _imports(path, module):
            if not in_function:
                continue
            row = node.lineno - 1  # walk up over the imports, blank lines and comments just above it
            while row > 0 and (lines[row - 1].strip().startswith(("import ", "from ", "#")) or not lines[row - 1].strip()):
                row -= 1
            context = lines[row:node.end_lineno]
            if not any(LAZY.search(line) for line in context):
                unexplained.append(f"{path}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not unexplained, "imports inside functions without a `# lazy: reason` comment:\n" + "\n".join(unexplained)


@pytest.mark.parametrize("source, expected", [
    ("from fashionlens.models._heads import x\n", 1),
    ("from fashionlens.training.fit import _loader\n", 1),
    ("from fashionlens.training.fit import fit\n", 0),
])
def test_private_check_flags_outside_uses(tmp_path, source, expected):
    path = tmp_path / "t.py"
    path.write_text(source)
    assert len(_private_uses(str(path), "outside")) == expected

