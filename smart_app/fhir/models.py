"""The ONE place that imports fhir.resources, pinned to R4B (EHRs speak R4; the package default is R5)."""

from __future__ import annotations

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from ..errors import InputError


def validate_r4(resource: dict) -> None:
    """Check a resource against the R4 base structure; raises InputError naming each problem."""
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"unknown resourceType {rtype!r}") from exc
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        raise InputError([f"{rtype}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]) from exc


def r4_problems(resource: dict) -> list[str]:
    """Like validate_r4, but returns the problems instead of raising."""
    try:
        validate_r4(resource)
    except InputError as exc:
        return exc.problems
    return []
