"""Issue 13: the dependency direction is checked, not hoped for (AST): the clinical core imports only the stdlib;
web imports services, errors and smart - no fhir or clinical module."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLINICAL = ROOT / "smart_app" / "clinical"
WEB = ROOT / "smart_app" / "web"
WEB_MAY_IMPORT = ("smart_app.services", "smart_app.errors", "smart_app.smart", "smart_app.web")


def imports_of(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import of a source file, relative imports resolved against its package;
    `from . import x` names the module `package.x`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            if node.module:
                found.append((node.lineno, ".".join([*base, node.module])))
            else:
                found.extend((node.lineno, ".".join([*base, alias.name])) for alias in node.names)
    return found


def imported_modules(source: str, package: str) -> list[str]:
    return [module for _, module in imports_of(source, package)]


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


def web_imports_refused(allowed) -> list[str]:
    """Every import of a smart_app module by the web layer that `allowed(module)` refuses, with its place."""
    return [f"{path.relative_to(ROOT)}:{line} imports {module}" for path in sorted(WEB.rglob("*.py"))
            for line, module in imports_of(path.read_text(encoding="utf-8"), package_of(path))
            if module.split(".")[0] == "smart_app" and not allowed(module)]


def test_web_imports_no_fhir_and_no_clinical_module():
    assert web_imports_refused(lambda m: not m.startswith(("smart_app.fhir", "smart_app.clinical"))) == []


def test_web_imports_only_services_errors_and_smart():
    assert web_imports_refused(lambda m: m.startswith(WEB_MAY_IMPORT)) == []


@pytest.mark.parametrize(("source", "expected"), [
    ("from ..fhir.parse import PatientData", "smart_app.fhir.parse"),
    ("from ..clinical import model", "smart_app.clinical"),
    ("import smart_app.fhir.gateway as g", "smart_app.fhir.gateway"),
    ("def f():\n    from ..fhir import build", "smart_app.fhir"),
    ("from .. import review", "smart_app.review"),
    ("from . import views", "smart_app.web.views"),
])
def test_the_import_check_resolves_every_form_the_web_rule_refuses(source, expected):
    assert imported_modules(source, "smart_app.web") == [expected]
