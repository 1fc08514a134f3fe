"""Every import of the package points down its layers (streamproc/layers.py).

The imports are read from the source (ast), not by importing it: an import
inside a function, or under TYPE_CHECKING, counts as much as one at the top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from streamproc.layers import LAYERS, layer_of

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "streamproc"
#: The Faust app: outside the package, at the top of it.
AGENTS = ROOT / "agents"


def units() -> set[str]:
    """The package's folders and modules right under it, as the layer table names them."""
    return {
        p.stem if p.suffix == ".py" else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").is_file()) and not p.name.startswith(".")
    }


def unit_of_file(path: Path) -> str:
    """The folder (or module) of the layer table a source file belongs to."""
    if path.is_relative_to(AGENTS):
        return "agents"
    first = path.relative_to(PACKAGE).parts[0]
    return first.removesuffix(".py")


def imported_modules(path: Path, tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in a file, relative ones made absolute.

    ``from streamproc import x`` yields ``streamproc.x``: x may be a folder.
    """
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join((*base, node.module) if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def unit_of_module(module: str, known: set[str]) -> str | None:
    """The folder of the layer table an imported module is in; None outside the project."""
    parts = module.split(".")
    if parts[0] == "agents":
        return "agents"
    if parts[0] != "streamproc":
        return None
    if len(parts) > 1 and parts[1] in known:
        return parts[1]
    return "__init__"  # `from streamproc import __version__`


def sources() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *AGENTS.rglob("*.py")])


def wrong_imports() -> tuple[list[str], int]:
    """One line per import that points up or sideways, and how many imports were read."""
    known = units()
    wrong: list[str] = []
    read = 0
    for path in sources():
        here = unit_of_file(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module in imported_modules(path, tree):
            there = unit_of_module(module, known)
            if there is None:
                continue
            read += 1
            if there == here:
                continue
            ours, theirs = layer_of(here), layer_of(there)
            if theirs <= ours:
                way = "up" if theirs < ours else "sideways, within one layer"
                wrong.append(
                    f"{path.relative_to(ROOT)}:{line}: {here} imports {there} ({module}): "
                    f"{way} (layer {ours} -> layer {theirs}, 0 at the top)"
                )
    return wrong, read


def test_every_folder_of_the_package_has_a_layer() -> None:
    placed = set().union(*LAYERS)
    assert units() - placed == set(), "give each new folder its layer in streamproc/layers.py"
    assert placed - units() - {"agents"} == set(), "the table names a folder that is gone"
    assert sum(len(layer) for layer in LAYERS) == len(placed), "a name is in two layers"


def test_imports_point_down_the_layers() -> None:
    wrong, read = wrong_imports()
    assert read > 500  # the walk found the package's imports
    assert wrong == [], "\n".join(["imports against streamproc/layers.py:", *wrong])


def test_the_walk_reads_imports_in_functions_and_under_type_checking(tmp_path: Path) -> None:
    code = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from streamproc.batch.plan import BatchPlan\n"
        "def f() -> None:\n"
        "    import streamproc.commands.run\n"
        "    from . import query\n"
        "    from ..sinks import layout\n"
    )
    path = PACKAGE / "runtime" / "example.py"
    modules = [m for _, m in imported_modules(path, ast.parse(code))]
    known = units()
    assert [unit_of_module(m, known) for m in modules] == [
        None,
        "batch",
        "commands",
        "runtime",
        "sinks",
    ]


def test_the_readme_draws_the_layers_as_the_table_lists_them() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("```\nagents ", 1)[1].split("```", 1)[0]
    drawn = [
        frozenset(name.strip() for name in line.split("  ", 1)[0].split(","))
        for line in ("agents " + block).splitlines()
        if line.strip()
    ]
    assert tuple(drawn) == LAYERS, "README.md's Layout draws other layers than streamproc/layers.py"
