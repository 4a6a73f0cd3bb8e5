"""Our validator: base R4 plus the LDN profiles, table-driven over the StructureDefinition JSON.

The HL7 Java validator and SUSHI cannot reach their package servers from here, so this is ours,
kept small and proven by the broken-instance tests (tests/test_profiles.py). For a resource:

1. base R4 structure (fhir.resources R4B via models.r4_problems) and base R4 required codes
   (models.code_problems: status, intent, kind, EventTiming ... - pydantic does not check these);
2. for each differential element of the profile: min/max cardinality in every instance of the
   parent (choice types `x[x]` count every `x<Type>`, arrays count items), allowed types of a
   choice, the resource type of relative references (targetProfile), fixed[x] (equal) and
   pattern[x] (contains), and required bindings to our ValueSets (fhir_profiles/valuesets and
   fhir_profiles/terminology; the ICD-10-CM/ATC prefix rule and match-term names as the engine);
3. each constraint, evaluated with fhirpathpy once per instance of its element (`%resource` is
   the resource, `%context` the instance). Two need reference resolution, which fhirpathpy
   cannot do against our data, so they are named Python checks (PYTHON_CHECKS), which their
   `human` text says: ldn-mr-9 (a reason from ValueSet ldn-order-reasons) and ldn-cp-1 (an
   activity refers to the LDN MedicationRequest).

References resolve through an optional `resolver`: a mapping of reference -> resource (the
Bundle's entries by fullUrl and Type/id, plus e.g. the patient's record). An unresolvable
reference is only checked for existence. A Bundle is checked as R4, then each entry against
the profile in its meta.profile - or ours, for a MedicationRequest/CarePlan carrying our order
identifier - and every other entry against base R4 only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models as fhirpath_models

from ..clinical.terminology import Terminology, load_valuesets
from .build import ORDER_IDENTIFIER_SYSTEM
from .contract import index_keys, reference_of
from .contract import resolve as resolve_reference
from .models import code_problems, r4_problems

# FHIR R4 data type names: the suffixes a choice element `x[x]` takes in JSON (`doseQuantity`).
R4_TYPES = frozenset((
    "Base64Binary Boolean Canonical Code Date DateTime Decimal Id Instant Integer Markdown Oid PositiveInt "
    "String Time UnsignedInt Uri Url Uuid Address Age Annotation Attachment CodeableConcept Coding "
    "ContactPoint Count Distance Duration HumanName Identifier Money Period Quantity Range Ratio Reference "
    "SampledData Signature Timing ContactDetail Contributor DataRequirement Expression ParameterDefinition "
    "RelatedArtifact TriggerDefinition UsageContext Dosage Meta").split())
_FHIRPATH_MODEL = fhirpath_models["r4"]

Resolver = Mapping[str, dict]


@dataclass(frozen=True)
class Problem:
    path: str  # FHIRPath-style location, e.g. MedicationRequest.dosageInstruction[1].doseAndRate[0]
    message: str
    rule: str  # constraint key (ldn-mr-3), or cardinality / type / fixed / pattern / binding / r4 / r4-code

    def __str__(self) -> str:
        return f"{self.path}: {self.message} ({self.rule})"


# --- loading -------------------------------------------------------------------------------------------------

def _json_files(folder: str, prefix: str) -> list[dict]:
    root = resources.files("fhir_profiles").joinpath(folder)
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(root.iterdir(), key=lambda p: p.name)
            if p.name.startswith(prefix) and p.name.endswith(".json")]


@cache
def load_profiles() -> dict[str, dict]:
    """Canonical URL -> StructureDefinition, for every profile in fhir_profiles/profiles."""
    return {sd["url"]: sd for sd in _json_files("profiles", "StructureDefinition-")}


@cache
def _valuesets() -> dict[str, dict]:
    return {vs["url"]: vs for vs in load_valuesets() + _json_files("terminology", "ValueSet-")}


@cache
def _terminology() -> Terminology:
    return Terminology(_valuesets().values())


def valueset_ids(url: str) -> frozenset[str]:
    """The ids of the ValueSets whose concepts make up `url` (compose.include.valueSet expanded)."""
    vs = _valuesets().get(url.split("|")[0])
    if vs is None:
        return frozenset()
    ids = {vs["id"]}
    for include in vs.get("compose", {}).get("include", []):
        for nested in include.get("valueSet", []):
            ids |= valueset_ids(nested)
    return frozenset(ids)


def _in_valueset(concept, url: str) -> bool:
    """A code, Coding or CodeableConcept with a member of the ValueSet (by code, or by name for a concept)."""
    ids, term = valueset_ids(url), _terminology()
    if isinstance(concept, str):
        return any(concept == c.get("code") for vid in ids for inc in term.valuesets[vid].get("compose", {})
                   .get("include", []) for c in inc.get("concept", []))
    if not isinstance(concept, dict):
        return False
    codings = concept.get("coding") if "coding" in concept else [concept]
    codings = codings if isinstance(codings, list) else []
    if any(m.valueset in ids for c in codings if isinstance(c, dict)
           for m in term.code_matches(c.get("system"), c.get("code"))):
        return True
    names = [concept.get("text")] + [c.get("display") for c in codings if isinstance(c, dict)]
    return any(m.valueset in ids for n in names for m in term.name_matches(n))


# --- walking instances along an ElementDefinition path -------------------------------------------------------

def _children(node, name: str, types: frozenset[str] = R4_TYPES) -> list[tuple[str, object]]:
    """(label, value) of the JSON members for one element name: `x` or, for `x[x]`, each present `x<Type>`."""
    if not isinstance(node, dict):
        return []
    if name.endswith("[x]"):
        prefix = name[:-3]
        keys = [k for k in node if k.startswith(prefix) and k[len(prefix):] in types]
    else:
        keys = [name] if name in node else []
    out = []
    for key in keys:
        value = node[key]
        if isinstance(value, list):
            out += [(f"{key}[{i}]", item) for i, item in enumerate(value)]
        else:
            out.append((key, value))
    return out


def instances(resource: dict, path: str) -> list[tuple[str, object]]:
    """(instance path, value) for every occurrence of an element path in the resource."""
    head, *names = path.split(".")
    found: list[tuple[str, object]] = [(head, resource)]
    for name in names:
        found = [(f"{p}.{label}", v) for p, node in found for label, v in _children(node, name)]
    return found


def _type_suffix(type_code: str) -> str:
    return type_code[:1].upper() + type_code[1:]


# --- element checks ------------------------------------------------------------------------------------------

def _cardinality(resource: dict, element: dict) -> list[Problem]:
    path = element["path"]
    if "." not in path:
        return []
    parent, name = path.rsplit(".", 1)
    low = element.get("min", 0)
    high = element.get("max", "*")
    out = []
    for ppath, node in instances(resource, parent):
        count = len(_children(node, name))
        if count < low:
            out.append(Problem(f"{ppath}.{name}", f"required (min {low}), found {count}", "cardinality"))
        if high != "*" and count > int(high):
            out.append(Problem(f"{ppath}.{name}", f"at most {high} allowed, found {count}", "cardinality"))
    return out


def _types(resource: dict, element: dict) -> list[Problem]:
    allowed = element.get("type")
    if not allowed:
        return []
    path, out = element["path"], []
    if path.endswith("[x]"):
        parent, name = path.rsplit(".", 1)
        ok = frozenset(_type_suffix(t["code"]) for t in allowed)
        for ppath, node in instances(resource, parent):
            for label, _ in _children(node, name):
                suffix = label.split("[")[0][len(name) - 3:]
                if suffix not in ok:
                    out.append(Problem(f"{ppath}.{label}", f"type {suffix} not allowed (only {', '.join(sorted(ok))})",
                                       "type"))
    targets = {p.rsplit("/", 1)[1] for t in allowed if t["code"] == "Reference" for p in t.get("targetProfile", [])}
    if targets:
        for ipath, value in instances(resource, path):
            ref = reference_of(value)
            if ref and ref.resource_type and ref.resource_type not in targets:
                out.append(Problem(ipath, f"refers to a {ref.resource_type}, must be {' or '.join(sorted(targets))}",
                                   "type"))
    return out


def _contains(value, pattern) -> bool:
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_contains(value.get(k), v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_contains(v, p) for v in value) for p in pattern)
    return value == pattern


def _show(value) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True) if isinstance(value, dict | list) else repr(value)


def _fixed_and_pattern(resource: dict, element: dict) -> list[Problem]:
    out = []
    for key, wanted in element.items():
        exact = key.startswith("fixed")
        if not (exact or key.startswith("pattern")):
            continue
        for ipath, value in instances(resource, element["path"]):
            if (value != wanted) if exact else not _contains(value, wanted):
                kind = "fixed" if exact else "pattern"
                out.append(Problem(ipath, f"{_show(value)} does not match the {kind} value {_show(wanted)}", kind))
    return out


def _binding(resource: dict, element: dict) -> list[Problem]:
    binding = element.get("binding") or {}
    url = binding.get("valueSet", "")
    if binding.get("strength") != "required" or not valueset_ids(url):
        return []
    name = url.rsplit("/", 1)[-1]
    return [Problem(ipath, f"{_show(value)} has no code from ValueSet {name}", "binding")
            for ipath, value in instances(resource, element["path"]) if not _in_valueset(value, url)]


# --- constraints ---------------------------------------------------------------------------------------------

@cache
def _compiled(expression: str):
    return compile_fhirpath(expression, _FHIRPATH_MODEL)


def _fhirpath_holds(expression: str, node, resource: dict) -> bool:
    return _compiled(expression)(node, {"resource": resource}) == [True]


def _constraints(resource: dict, element: dict, resolver: Resolver) -> list[Problem]:
    out = []
    for constraint in element.get("constraint", []):
        key, human = constraint["key"], constraint["human"]
        check = PYTHON_CHECKS.get(key)
        for ipath, node in instances(resource, element["path"]):
            try:
                if check:  # the named checks are on resource roots: a non-object fails them
                    ok = isinstance(node, dict) and check(node, resolver)
                else:
                    ok = _fhirpath_holds(constraint["expression"], node, resource)
            except Exception as exc:  # noqa: BLE001 - fhirpathpy raises bare Exception on type errors
                out.append(Problem(ipath, f"{human} - could not be evaluated ({exc})", key))
                continue
            if not ok:
                found = f" (found {node})" if isinstance(node, int | float | str) else ""
                out.append(Problem(ipath, human + found, key))
    return out


def _reason_from_valueset(mr: dict, resolver: Resolver) -> bool:
    """ldn-mr-9: a coded reason in ldn-order-reasons, or a referenced Condition that is (or cannot be resolved)."""
    url = "https://fhir.ldn-app.org/ValueSet/ldn-order-reasons"
    if any(_in_valueset(c, url) for c in mr.get("reasonCode", [])):
        return True
    for ref in mr.get("reasonReference", []):
        target = resolve(ref, resolver)
        if target is None and ref.get("reference"):
            return True  # cannot see the Condition: only its existence is checked (ldn-mr-8)
        if target is not None and _in_valueset(target.get("code") or {}, url):
            return True
    return False


def _refers_to_ldn_order(cp: dict, resolver: Resolver) -> bool:
    """ldn-cp-1: an activity.reference to our MedicationRequest (resolved), or that looks like one."""
    for activity in cp.get("activity", []):
        ref = activity.get("reference") or {}
        target = resolve(ref, resolver)
        if target is not None:
            if target.get("resourceType") == "MedicationRequest" and is_ldn_order(target):
                return True
            continue
        parsed = reference_of(ref)
        if parsed and (parsed.kind == "urn" or parsed.resource_type == "MedicationRequest"):
            return True
    return False


PYTHON_CHECKS: dict[str, Callable[[dict, Resolver], bool]] = {
    "ldn-mr-9": _reason_from_valueset,
    "ldn-cp-1": _refers_to_ldn_order,
}


# --- references ----------------------------------------------------------------------------------------------

def resolve(reference: dict, resolver: Resolver) -> dict | None:
    """The resource a Reference points to, if the resolver holds it (exact, or by its Type/id)."""
    return resolve_reference(reference_of(reference), resolver)


def resolver_for(*bundles: dict) -> dict[str, dict]:
    """Reference -> resource for every entry of these Bundles (by fullUrl and by Type/id)."""
    out: dict[str, dict] = {}
    for bundle in bundles:
        for entry in bundle.get("entry", []) if isinstance(bundle, dict) else []:
            res = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(res, dict):
                continue
            for key in index_keys(res, entry.get("fullUrl")):
                out[key] = res
    return out


# --- entry points --------------------------------------------------------------------------------------------

def is_ldn_order(resource: dict) -> bool:
    """Does this resource say it is ours (our profile in meta.profile, or our order identifier)?"""
    profiles = (resource.get("meta") or {}).get("profile") or []
    ids = resource.get("identifier") or []
    return any(p.split("|")[0] in load_profiles() for p in profiles) or any(
        isinstance(i, dict) and i.get("system") == ORDER_IDENTIFIER_SYSTEM for i in ids)


def profile_for(resource: dict) -> dict | None:
    """The profile a resource is checked against: the one in its meta.profile, or ours when it carries our key."""
    profiles = load_profiles()
    for url in (resource.get("meta") or {}).get("profile") or []:
        if url.split("|")[0] in profiles:
            return profiles[url.split("|")[0]]
    if is_ldn_order(resource):
        return next((sd for sd in profiles.values() if sd["type"] == resource.get("resourceType")), None)
    return None


def base_problems(resource: dict) -> list[Problem]:
    """R4 structure (pydantic) and R4 required codes."""
    out = [Problem(*_split_r4(p), "r4") for p in r4_problems(resource)]
    out += [Problem(path, f"{value!r} is not a code of the R4 required value set ({', '.join(allowed)})", "r4-code")
            for path, value, allowed in code_problems(resource)]
    return out


def _split_r4(problem: str) -> tuple[str, str]:
    path, _, message = problem.partition(": ")
    return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", path), message


def profile_problems(resource: dict, profile: dict, resolver: Resolver | None = None) -> list[Problem]:
    """Every differential element's cardinality, types, fixed/pattern values, required binding and constraints."""
    if resource.get("resourceType") != profile["type"]:
        return [Problem(str(resource.get("resourceType")), f"is not a {profile['type']}", "type")]
    resolver = resolver or {}
    out: list[Problem] = []
    for element in profile["differential"]["element"]:
        out += _cardinality(resource, element) + _types(resource, element) + _fixed_and_pattern(resource, element)
        out += _binding(resource, element) + _constraints(resource, element, resolver)
    return out


def validate(resource: dict, resolver: Resolver | None = None) -> list[Problem]:
    """Base R4 and, where one applies, our profile - for a resource or every entry of a Bundle."""
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return [Problem("(root)", "not a FHIR resource (no resourceType)", "r4")]
    out = base_problems(resource)
    if resource["resourceType"] == "Bundle":
        context = {**(resolver or {}), **resolver_for(resource)}
        for i, entry in enumerate(resource.get("entry") or []):
            res = entry.get("resource") if isinstance(entry, dict) else None
            profile = profile_for(res) if isinstance(res, dict) else None
            if profile:
                prefix = f"Bundle.entry[{i}].resource"
                out += [Problem(prefix + p.path[len(profile["type"]):], p.message, p.rule)
                        for p in profile_problems(entry["resource"], profile, context)]
        return out
    profile = profile_for(resource)
    return out + (profile_problems(resource, profile, resolver) if profile else [])
