"""CLI commands that need the web app, the sandbox or the validator (imported lazily)."""

from __future__ import annotations


def register(sub) -> None:
    """Nothing yet: `validate`, `serve` and `demo` are added here as they land."""
