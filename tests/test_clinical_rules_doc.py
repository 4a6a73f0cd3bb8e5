"""Issue 8 item 8: the clinical rules live in the repository, and nothing links outside it."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "clinical-rules.md"


def test_the_readme_links_the_projects_own_clinical_rules_document():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/clinical-rules.md)" in readme
    assert DOC.is_file()


def test_the_clinical_rules_document_covers_every_rule_and_names_its_sources():
    text = DOC.read_text(encoding="utf-8")
    for rule in ("R1", "R2", "R3", "R4", "R5", "R6"):
        assert re.search(rf"^## {rule} ", text, re.MULTILINE), rule
    for source in ("000", "001", "002", "003", "004", "21 CFR 1306.22", "21 CFR 1306.12", "naltrexone label"):
        assert source in text, source


def project_files():
    skipped = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skipped and not d.endswith(".egg-info")]
        for name in files:
            if name.endswith((".md", ".py", ".json", ".html", ".toml", ".sh", ".txt", ".cfg")):
                yield Path(folder) / name


def test_no_project_file_points_into_a_shared_folder_outside_the_repository():
    outside = "../" + "shared"
    offenders = [str(p.relative_to(ROOT)) for p in project_files()
                 if outside in p.read_text(encoding="utf-8", errors="replace")]
    assert offenders == []
