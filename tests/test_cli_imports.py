"""Issue 13: the `ldn-app` entry point imports its command modules; no command module imports it back."""

from __future__ import annotations

from pathlib import Path

from test_import_rules import ROOT, imported_modules, package_of

SMART_APP = ROOT / "smart_app"


def importers_of(module: str) -> list[str]:
    return sorted(str(path.relative_to(ROOT)) for path in SMART_APP.rglob("*.py")
                  if module in imported_modules(path.read_text(encoding="utf-8"), package_of(path)))


def test_no_module_of_the_app_imports_the_cli_entry_point_so_there_is_no_import_cycle():
    assert importers_of("smart_app.cli") == []


def test_the_command_modules_share_their_helpers_through_cli_common():
    commands = [Path("smart_app/cli_extra.py"), Path("smart_app/cli_server.py"), Path("smart_app/cli_due.py")]
    assert set(importers_of("smart_app.cli_common")) >= {"smart_app/cli.py", *map(str, commands)}
