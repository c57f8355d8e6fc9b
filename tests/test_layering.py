"""Layering: megarouter/ is the base the two planes and the console stand on, so it imports
none of them; the planes do not import each other; and the console — a client of the admin
API like megarouterctl — imports neither plane, nor does either plane import it.

Checked on the source with `ast`, so an import inside a function counts as much as one at the
top of a module. An import is an `import`/`from ... import` statement, an
`importlib.import_module(...)`/`__import__(...)` call with a literal name, or any string that
spells a plane module ("dataplane.x"), the way a lazy or patched import names it.

The one place the base may name a plane module is a command table of a CLI: `megarouter proxy`
runs the data plane (cli.py COMMANDS) and `megarouterctl whatif` the data-plane router
(ctl.py PLANE_MODULES). They resolve the module by name when the command runs and nothing
else imports it; the names in them are checked to exist, since nothing imports them statically.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLANES = ("dataplane", "controlplane")
# (file, module-level name) of the command tables allowed to name plane modules.
COMMAND_TABLES = {("megarouter/cli.py", "COMMANDS"), ("megarouter/ctl.py", "PLANE_MODULES")}
_DOTTED_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
_IMPORT_CALLS = {"import_module", "__import__"}


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _table_nodes(tree: ast.Module, rel: str) -> set[int]:
    """ids of the nodes inside this file's allowed command tables."""
    names = {name for path, name in COMMAND_TABLES if path == rel}
    inside: set[int] = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id in names for t in targets) and node.value is not None:
            inside.update(id(n) for n in ast.walk(node.value))
    return inside


def plane_imports(path: Path, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """`file:line: <the import>` for each import of a `forbidden` top-level package in `path`."""
    rel = path.relative_to(root).as_posix()
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=rel)
    allowed = _table_nodes(tree, rel)
    found: list[tuple[int, int, str]] = []

    def report(node: ast.AST, module: str) -> None:
        text = ast.get_source_segment(source, node) or ast.unparse(node)
        found.append((node.lineno, node.col_offset,
                      f"{rel}:{node.lineno}: {' '.join(text.split())}  (imports {_top(module)})"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _top(alias.name) in forbidden:
                    report(node, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and _top(node.module) in forbidden:
                report(node, node.module)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            arg = node.args[0] if node.args else None
            if name in _IMPORT_CALLS and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                allowed.add(id(arg))   # reported here, as the call, not again as a string
                if _top(arg.value) in forbidden:
                    report(node, arg.value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in allowed:
            if _DOTTED_MODULE.fullmatch(node.value) and _top(node.value) in forbidden:
                report(node, node.value)
    return [line for *_, line in sorted(found)]


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(("package", "forbidden"), [
    ("megarouter", (*PLANES, "console")),
    ("controlplane", ("dataplane", "console")),
    ("dataplane", ("controlplane", "console")),
    ("console", PLANES),
])
def test_no_layer_imports_what_stands_beside_or_on_it(package: str, forbidden: tuple[str, ...]) -> None:
    files = _sources(package)
    assert len(files) > 5, f"no sources found under {package}/"
    found = [line for path in files for line in plane_imports(path, forbidden)]
    assert not found, (f"{package}/ must not import {' or '.join(forbidden)}:\n  " + "\n  ".join(found))


def test_the_command_tables_exist_and_name_real_modules() -> None:
    for rel, name in sorted(COMMAND_TABLES):
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
        tables = [node.value for node in tree.body if isinstance(node, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)]
        assert len(tables) == 1, f"{rel}: no module-level {name} (update COMMAND_TABLES in this test)"
        modules = [n.value for n in ast.walk(tables[0]) if isinstance(n, ast.Constant)
                   and isinstance(n.value, str) and _DOTTED_MODULE.fullmatch(n.value)]
        assert modules, f"{rel}: {name} names no modules"
        for module in modules:
            assert importlib.util.find_spec(module) is not None, f"{rel}: {name} names {module}, which does not exist"


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    (tmp_path / "megarouter").mkdir()
    bad = tmp_path / "megarouter" / "bad.py"
    bad.write_text(
        "import os\n"
        "import dataplane.table as table\n"
        "from controlplane import server\n"
        "from . import sibling\n"
        "def lazy():\n"
        "    from dataplane.routing.router import plan\n"
        "    import importlib\n"
        "    return importlib.import_module('controlplane'), __import__('dataplane')\n"
        "PATCH = 'dataplane.health.HealthRegistry'\n"
        "LATER = importlib.import_module('dataplane.server')\n"
        "WORD = 'controlplane'  # a word (a subcommand's name), not a module\n"
    )
    found = plane_imports(bad, PLANES, root=tmp_path)
    assert [line.split(":")[1] for line in found] == ["2", "3", "6", "8", "8", "9", "10"], found
    assert found[0] == "megarouter/bad.py:2: import dataplane.table as table  (imports dataplane)"
    assert "from dataplane.routing.router import plan" in found[2]
