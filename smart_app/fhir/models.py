"""The ONE place that imports fhir.resources, pinned to R4B (EHRs speak R4; the package default is R5)."""

from __future__ import annotations

import typing

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


# --- R4 element lookups for the profile validator (smart_app/fhir/validate.py) -------------------------------

# Required bindings that fhir.resources does not carry as `enum_values` (R4 EventTiming, Timing.repeat.when).
_EXTRA_REQUIRED_CODES = {
    ("TimingRepeat", "when"): (
        "MORN", "MORN.early", "MORN.late", "NOON", "AFT", "AFT.early", "AFT.late", "EVE", "EVE.early",
        "EVE.late", "NIGHT", "PHS", "HS", "WAKE", "C", "CM", "CD", "CV", "AC", "ACM", "ACD", "ACV", "PC",
        "PCM", "PCD", "PCV"),
}


def _json_fields(model) -> dict:
    """JSON name -> pydantic field, without the `_x` primitive-extension twins."""
    return {(f.alias or name): f for name, f in model.model_fields.items()
            if not name.endswith("__ext") and name != "fhir_comments"}


def _field_model(field):
    """The FHIR model class of a complex field (None for a primitive)."""
    stack = [field.annotation]
    while stack:
        a = stack.pop()
        if hasattr(a, "get_model_klass"):
            return a.get_model_klass()
        if typing.get_origin(a) is not typing.Annotated:
            stack.extend(typing.get_args(a))
    return None


def _model(resource_type: str | None):
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, TypeError):
        return None


class _PRIMITIVE:
    """Stands for a primitive element: it exists, and has no children we profile."""

    model_fields: dict = {}


def element_exists(resource_type: str, dotted_path: str) -> bool:
    """Does this ElementDefinition path exist in R4? e.g. `MedicationRequest.dosageInstruction.doseAndRate.dose[x]`."""
    head, *names = dotted_path.split(".")
    models = [_model(resource_type)] if head == resource_type else []
    for name in names:
        nxt = []
        for model in filter(None, models):
            fields = _json_fields(model)
            if name.endswith("[x]"):
                prefix = name[:-3]
                nxt += [_field_model(f) or _PRIMITIVE for key, f in fields.items()
                        if key.startswith(prefix) and key[len(prefix):][:1].isupper()]
            elif name in fields:
                nxt.append(_field_model(fields[name]) or _PRIMITIVE)
        models = nxt
        if not models:
            return False
    return bool(models)


def code_problems(resource: dict) -> list[tuple[str, str, tuple[str, ...]]]:
    """(path, value, allowed) for every code outside its R4 required binding - pydantic does not check these."""
    model = _model(resource.get("resourceType") if isinstance(resource, dict) else None)
    out: list = []
    if model is not None:
        _walk_codes(model, resource, resource["resourceType"], out)
    return out


def _walk_codes(model, node, path: str, out: list) -> None:
    if not isinstance(node, dict):
        return
    for key, field in _json_fields(model).items():
        if key not in node:
            continue
        value = node[key]
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        allowed = tuple((field.json_schema_extra or {}).get("enum_values") or ()) or \
            _EXTRA_REQUIRED_CODES.get((model.__name__, key), ())
        child = _field_model(field)
        for i, item in items:
            p = f"{path}.{key}" if i is None else f"{path}.{key}[{i}]"
            if allowed and isinstance(item, str) and item not in allowed:
                out.append((p, item, allowed))
            elif child is not None and isinstance(item, dict):
                concrete = _model(item.get("resourceType")) if "resourceType" in item else child
                _walk_codes(concrete or child, item, p, out)
