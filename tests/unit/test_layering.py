"""`pipeline/` is a library: it imports no receiver, processor, exporter or connector, nor the distribution.

Walks every module of the package with `ast`, so a lazy import inside a function counts too (the
factory map reaches the library only as an argument). Components, in turn, never import the
distribution: only `otelpipe/components.py` knows them all.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENT_PACKAGES = ("receivers", "processors", "exporters", "connectors", "extensions")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__" and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            found.add(node.args[0].value)
    return found


def top(module: str) -> str:
    return module.partition(".")[0]


def modules_of(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules_of("pipeline"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_library_imports_no_component_and_not_the_distribution(path: Path) -> None:
    bad = sorted(m for m in imported_modules(path) if top(m) in (*COMPONENT_PACKAGES, "otelpipe"))
    assert bad == [], f"{path.relative_to(ROOT)} imports {bad}: pass what it needs as an argument instead"


@pytest.mark.parametrize("package", COMPONENT_PACKAGES)
def test_components_do_not_import_the_distribution(package: str) -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p) if top(m) == "otelpipe")
                 for p in modules_of(package)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_walk_sees_lazy_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from processors import batch\n    import exporters.debug\n"
                     "    return __import__('receivers.otlp')\n")
    assert {top(m) for m in imported_modules(probe)} == {"processors", "exporters", "receivers"}
