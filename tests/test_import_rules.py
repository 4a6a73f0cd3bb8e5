"""Issue 13: the dependency direction is checked, not hoped for (the clinical core imports only the stdlib)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLINICAL = ROOT / "smart_app" / "clinical"


def imported_modules(source: str, package: str) -> list[str]:
    """Every module a source file imports, relative imports resolved against its package."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            found.append(".".join([*base, node.module] if node.module else base))
    return found


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])


def outside_the_stdlib(source: str, package: str) -> list[str]:
    return [m for m in imported_modules(source, package)
            if not m.startswith("smart_app.clinical") and m.split(".")[0] not in sys.stdlib_module_names]


@pytest.mark.parametrize("path", sorted(CLINICAL.rglob("*.py")), ids=lambda p: str(p.relative_to(CLINICAL)))
def test_the_clinical_core_imports_only_the_stdlib_and_itself(path):
    assert outside_the_stdlib(path.read_text(encoding="utf-8"), package_of(path)) == []


def test_the_import_check_catches_a_library_and_a_relative_import_that_leaves_the_core():
    source = "import json\nimport flask\nfrom ...fhir import parse\nfrom ..model import Finding\n"
    assert outside_the_stdlib(source, "smart_app.clinical.rules") == ["flask", "smart_app.fhir"]


def test_every_rule_module_quotes_its_rule_and_names_its_sources_at_the_top():
    modules = sorted((CLINICAL / "rules").glob("r[1-6]_*.py"))
    assert {p.name[:2] for p in modules} == {"r1", "r2", "r3", "r4", "r5", "r6"}
    for path in modules:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        rule = path.name[:2].upper()
        assert f"Rule {rule}, quoted from docs/clinical-rules.md" in doc, path.name
        assert '"' in doc and "Sources:" in doc, path.name
