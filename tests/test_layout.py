"""Source layout: the import graph between augkd's layers, no import cycle, and no overlong function.

The graph comes from parsing the source with ``ast`` (nothing is imported): every ``import`` and ``from ... import``
statement counts, module-level or inside a function, except those under ``if TYPE_CHECKING:``. Files map to the
installed module names: ``augkd/**`` → ``augkd.*``, ``kernels/**`` → ``augkd.kernels.*``, ``export/**`` →
``augkd.export.*``.

Layers, and what each may import:

- ``cli`` (``augkd.cli.*``, ``augkd.__main__``): anything;
- ``export`` (``augkd.export.*``): export, core and kernels;
- ``core`` (every other ``augkd.*`` module): core and kernels;
- ``kernels`` (``augkd.kernels.*``): kernels only;
- ``augkd.errors``: a leaf that every layer may import, importing nothing from augkd itself.

Every function (methods and nested functions each on their own) is at most ``MAX_FUNCTION_LINES`` lines long,
``def`` line to last line; Triton kernels (``@triton.jit``, ``@triton.autotune``) are exempt.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = {"augkd": "augkd", "kernels": "augkd.kernels", "export": "augkd.export"}
LEAF = "augkd.errors"
ALLOWED = {
    "cli": {"cli", "export", "core", "kernels", "errors"},
    "export": {"export", "core", "kernels", "errors"},
    "core": {"core", "kernels", "errors"},
    "kernels": {"kernels", "errors"},
    "errors": set(),
}


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    where: str  # file:line

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst}  ({self.where})"


def _in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer(module: str) -> str:
    if module == LEAF:
        return "errors"
    if module == "augkd.__main__" or _in_package(module, "augkd.cli"):
        return "cli"
    if _in_package(module, "augkd.export"):
        return "export"
    if _in_package(module, "augkd.kernels"):
        return "kernels"
    return "core"


@cache
def module_files() -> dict[str, Path]:
    """Installed module name -> source file, for every ``.py`` file under augkd/, kernels/ and export/."""
    modules: dict[str, Path] = {}
    for directory, prefix in SOURCE_DIRS.items():
        for path in sorted((ROOT / directory).rglob("*.py")):
            parts = path.relative_to(ROOT / directory).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((prefix, *parts))] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, at any depth, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _known(name: str) -> str | None:
    """The longest prefix of the dotted ``name`` that is one of our modules (None outside augkd)."""
    modules = module_files()
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if (target := _known(alias.name)) is not None:
                yield target
        return
    if node.level:
        is_package = module_files()[module].name == "__init__.py"
        package = module.split(".")
        package = package[: len(package) - node.level + (1 if is_package else 0)]
        base = ".".join([*package, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    for alias in node.names:
        # `from pkg import sub` imports the submodule `pkg.sub`; `from pkg import name` imports `pkg`
        target = _known(f"{base}.{alias.name}") if f"{base}.{alias.name}" in module_files() else _known(base)
        if target is not None:
            yield target


@cache
def import_edges() -> tuple[Edge, ...]:
    edges = set()
    for module, path in module_files().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _import_nodes(tree):
            for target in _targets(module, node):
                if target != module:
                    edges.add(Edge(module, target, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return tuple(sorted(edges, key=lambda e: (e.src, e.dst, e.where)))


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the SCCs of ``graph``, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def test_the_module_map_sees_every_package():
    modules = module_files()
    for name in ("augkd", "augkd.cli", "augkd.errors", "augkd.kernels", "augkd.kernels.triton", "augkd.export"):
        assert name in modules, name
    assert any(e.src.startswith("augkd.kernels") for e in import_edges())


def test_layers_import_only_what_they_may():
    bad = [e for e in import_edges() if layer(e.dst) not in ALLOWED[layer(e.src)]]
    lines = [f"{layer(e.src)} -> {layer(e.dst)}: {e}" for e in bad]
    assert not bad, "imports across layers that are not allowed:\n" + "\n".join(lines)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {m: set() for m in module_files()}
    for e in import_edges():
        graph[e.src].add(e.dst)
    cycles = [c for c in strongly_connected_components(graph) if len(c) > 1]
    report = []
    for component in cycles:
        members = set(component)
        inner = [str(e) for e in import_edges() if e.src in members and e.dst in members]
        report.append("cycle among " + ", ".join(component) + ":\n    " + "\n    ".join(inner))
    assert not cycles, "import cycles:\n" + "\n".join(report)


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert sorted(map(tuple, strongly_connected_components(graph))) == [("a", "b", "c"), ("d",), ("e",)]


# --- function length ---------------------------------------------------------------------------------
MAX_FUNCTION_LINES = 60
_JIT_DECORATORS = {"triton.jit", "jit", "triton.autotune", "autotune"}


def _decorator_name(node: ast.expr) -> str:
    node = node.func if isinstance(node, ast.Call) else node
    return ast.unparse(node)


def long_functions(limit: int = MAX_FUNCTION_LINES) -> dict[str, tuple[int, str]]:
    """``"path::qualname"`` -> (length in lines, ``path:line``) of every function longer than ``limit`` lines.

    The length is ``end_lineno - lineno + 1`` of the ``def`` (decorators excluded); a nested function counts on
    its own (and inside its parent's length). Triton kernels (``@triton.jit``, ``@triton.autotune``) are exempt.
    """
    found: dict[str, tuple[int, str]] = {}
    for path in module_files().values():
        rel = path.relative_to(ROOT).as_posix()
        stack: list[tuple[ast.AST, str]] = [(ast.parse(path.read_text(), filename=str(path)), "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    name = f"{prefix}{child.name}"
                    stack.append((child, name + "."))
                    if isinstance(child, ast.ClassDef):
                        continue
                    length = child.end_lineno - child.lineno + 1
                    exempt = any(_decorator_name(d) in _JIT_DECORATORS for d in child.decorator_list)
                    if length > limit and not exempt:
                        found[f"{rel}::{name}"] = (length, f"{rel}:{child.lineno}")
                else:
                    stack.append((child, prefix))
    return found


def test_no_function_is_longer_than_the_limit():
    found = long_functions()
    lines = [f"{where}  {name.split('::')[1]}: {n} lines" for name, (n, where) in sorted(found.items())]
    assert not found, f"functions longer than {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(lines)


def test_the_length_check_sees_methods_and_nested_functions_and_skips_triton_kernels():
    found = long_functions(limit=3)
    assert "augkd/training/engine.py::run_stages" in found
    assert "augkd/training/engine.py::RunContext.batches" in found  # a method
    assert "export/pipeline.py::_Context.tensorrt.run" in found  # a function inside a method
    kernels = [n for n in found if n.startswith("kernels/triton/") and n.endswith("_kernel")]
    assert not kernels, kernels  # @triton.jit
    assert "kernels/triton/kd_loss.py::KDLossFunction.forward" in found  # not a kernel: counted
