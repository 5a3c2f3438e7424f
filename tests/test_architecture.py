"""The layering of docs/architecture.md holds: imports only go down, no circles, only the CLI prints.

Every module of the package is parsed with ``ast``; every import counts,
including those inside functions (a circle closed by a function-level import
is still a circle). The layers are read from the ``layers`` block of
docs/architecture.md, so the map and this test cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "semseg"
MAP = ROOT / "docs" / "architecture.md"


def documented_layers() -> dict[str, int]:
    """Unit (top-level module or package of semseg, or "semseg" for the root) -> its layer, 1 = the bottom."""
    block = re.search(r"```layers\n(.*?)```", MAP.read_text(), re.S)
    assert block, f"{MAP} lacks its ```layers block"
    layers: dict[str, int] = {}
    for line in block.group(1).splitlines():
        number, _, names = line.partition(" ")
        for name in names.split("#")[0].split():
            layers[name] = int(number)
    return layers


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = modules()


def imported(name: str, tree: ast.Module) -> set[str]:
    """The semseg modules ``name`` imports anywhere in its code (``from pkg import sub`` counts as ``pkg.sub``)."""
    package = name if (PACKAGE / Path(*name.split(".")[1:]) / "__init__.py").is_file() else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in MODULES else base)
    return {target for target in targets if target == "semseg" or target.startswith("semseg.")}


def unit(name: str) -> str:
    """The layer unit of a module: ``semseg.models.factory`` -> ``models``, ``semseg`` -> ``semseg``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "semseg"


GRAPH = {name: imported(name, tree) for name, tree in MODULES.items()}


def test_every_unit_of_the_package_is_on_the_map():
    layers = documented_layers()
    missing = sorted({unit(name) for name in MODULES} - set(layers))
    assert not missing, f"add these to the layers block of {MAP.name}: {missing}"


def test_every_import_names_a_module_that_exists():
    unknown = sorted(f"{name} -> {target}" for name, targets in GRAPH.items() for target in targets if target not in MODULES)
    assert not unknown, unknown


def test_imports_only_go_down_the_layers():
    layers = documented_layers()
    upward = []
    for name, targets in GRAPH.items():
        for target in targets:
            if unit(target) != unit(name) and layers[unit(target)] >= layers[unit(name)]:
                upward.append(f"{name} (layer {layers[unit(name)]}) imports {target} (layer {layers[unit(target)]})")
    assert not upward, "imports that break the layering of docs/architecture.md:\n" + "\n".join(sorted(upward))


def test_no_import_circles_not_even_through_function_level_imports():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(GRAPH.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in GRAPH.get(node, ()):
                circles.append(sorted(component))

    for name in sorted(GRAPH):
        if name not in index:
            visit(name)
    assert not circles, f"import circles: {circles}"


def _prints(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            lines.append(node.lineno)
        elif (isinstance(node, ast.Attribute) and node.attr == "write" and isinstance(node.value, ast.Attribute)
              and node.value.attr in ("stdout", "stderr") and isinstance(node.value.value, ast.Name)
              and node.value.value.id == "sys"):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("name", [name for name in MODULES if unit(name) != "cli"])
def test_only_the_cli_parses_arguments_or_prints(name):
    tree = MODULES[name]
    argparse_imports = [
        node.lineno for node in ast.walk(tree)
        if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names)
        or isinstance(node, ast.ImportFrom) and node.module == "argparse"
    ]
    assert not argparse_imports, f"{name} imports argparse (line {argparse_imports[0]}): parsing belongs to semseg/cli/"
    prints = _prints(tree)
    assert not prints, f"{name} prints (line {prints[0]}): log through logging.getLogger(__name__) instead"


def test_the_checker_sees_function_level_imports_and_resolves_submodules():
    tree = ast.parse("def f():\n    from semseg.models import factory, create_model\n    import semseg.io\n")
    assert imported("semseg.predict.predictor", tree) == {"semseg.models.factory", "semseg.models", "semseg.io"}
