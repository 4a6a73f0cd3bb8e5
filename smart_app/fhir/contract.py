"""The FHIR contract: the resource types the app reads and writes, and the one reference parser/rewriter."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal, Protocol, overload

if TYPE_CHECKING:
    from .gateway import PatientRecord

# What the app reads (checked against fhir_profiles/CapabilityStatement-ldn-app-client.json by a test).
MEDICATION_USE_TYPES = ("MedicationStatement", "MedicationRequest", "MedicationDispense")
SEARCHED_TYPES = (*MEDICATION_USE_TYPES, "Condition")  # searched by patient
READ_TYPES = ("Patient", *SEARCHED_TYPES, "Medication")
ORDER_TYPES = ("MedicationRequest", "CarePlan", "Provenance")  # what every signed order writes (create scopes)
WRITTEN_TYPES = (*ORDER_TYPES, "Observation")  # Observation: pain scores
FOLLOW_UP_READ_TYPES = ("CarePlan", "Observation", "Provenance")  # the app's own plan, baseline, review record
CONTACT_READ_TYPES = ("Practitioner", "Organization")  # the handout's prescriber and clinic: one read each, if granted
FOLLOW_UP_UPDATED_TYPES = frozenset({"MedicationRequest", "CarePlan"})  # the recorded review (PUT, If-Match)
# Only without `transaction` (services._place_sequentially): the draft order is activated by read + update,
# and a failed step's resources are deleted.
UPDATED_TYPES = frozenset({"MedicationRequest"})
DELETED_TYPES = frozenset(WRITTEN_TYPES)

MAX_REFERENCE_LENGTH = 4096  # longer strings are not references (and are never scanned)
RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# [base/]Type/id[/_history/vid][/]  (FHIR R4 references.html#literal; a trailing slash is tolerated)
_LITERAL = re.compile(
    r"(?:(?P<base>https?://[^?#\s]+?)/)?(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?/?")
_URN = re.compile(r"urn:(?:uuid:[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|oid:[0-2](?:\.(?:0|[1-9]\d*))+)")
_CONTAINED = re.compile(r"#(?P<id>[A-Za-z0-9\-.]{1,64})")

Kind = Literal["relative", "absolute", "urn", "contained"]


@dataclass(frozen=True)
class Reference:
    """A parsed literal reference; `local` ("Type/id") is how a resource is looked up on its own server."""

    text: str  # as written
    kind: Kind
    resource_type: str | None = None  # None for urn: and contained references
    id: str | None = None  # the contained id for "#id"
    version: str | None = None  # the /_history/ version, if any
    base: str | None = None  # the server base of an absolute reference

    @property
    def local(self) -> str | None:
        return f"{self.resource_type}/{self.id}" if self.resource_type else None

    @property
    def key(self) -> str:
        """The form a Bundle's fullUrl or a `Type/id` index uses for this reference."""
        return self.local or self.text


def parse_reference(value: object) -> Reference | None:
    """A reference string in any valid form, or None when it is not one (never raises)."""
    if not isinstance(value, str) or not value or len(value) > MAX_REFERENCE_LENGTH:
        return None
    return _parse(value)


@lru_cache(maxsize=4096)  # a record's subject and medication references repeat: parse each once
def _parse(value: str) -> Reference | None:
    text = value.strip()
    m = _CONTAINED.fullmatch(text)
    if m:
        return Reference(text, "contained", id=m["id"])
    if _URN.fullmatch(text):
        return Reference(text, "urn")
    m = _LITERAL.fullmatch(text)
    if m is None:
        return None
    kind: Kind = "absolute" if m["base"] else "relative"
    return Reference(text, kind, m["type"], m["id"], m["version"], m["base"])


def reference_of(element: object) -> Reference | None:
    """The parsed `reference` of a FHIR Reference element (a dict), or None."""
    return parse_reference(element.get("reference")) if isinstance(element, dict) else None


def resolve(ref: Reference | None, index: Mapping[str, dict], container: object = None) -> dict | None:
    """The resource a reference names: a contained one, else by fullUrl as written, else by `Type/id`."""
    if ref is None:
        return None
    if ref.kind == "contained":
        contained = container.get("contained") if isinstance(container, dict) else None
        for c in contained if isinstance(contained, list) else ():
            if isinstance(c, dict) and c.get("id") == ref.id:
                return c
        return None
    found = index.get(ref.text) or index.get(ref.text.rstrip("/"))
    return found if found is not None else index.get(ref.key)


def index_keys(resource: dict, full_url: object = None) -> tuple[str, ...]:
    """The names references may use for a resource: its fullUrl and `Type/id`."""
    keys = []
    if isinstance(full_url, str) and full_url:
        keys.append(full_url)
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if isinstance(rtype, str) and isinstance(rid, str) and RESOURCE_TYPE.fullmatch(rtype) and FHIR_ID.fullmatch(rid):
        keys.append(f"{rtype}/{rid}")
    return tuple(keys)


@overload
def rewrite_references(node: dict, mapping: Mapping[str, str]) -> dict: ...
@overload
def rewrite_references(node: object, mapping: Mapping[str, str]) -> object: ...
def rewrite_references(node: object, mapping: Mapping[str, str]) -> object:
    """A copy of `node` with every Reference.reference found in `mapping` replaced (e.g. urn:uuid -> Type/id)."""
    if isinstance(node, dict):
        return {k: (mapping.get(v, v) if k == "reference" and isinstance(v, str) else rewrite_references(v, mapping))
                for k, v in node.items()}
    if isinstance(node, list):
        return [rewrite_references(item, mapping) for item in node]
    return node


class Gateway(Protocol):
    """What the app asks of an EHR's FHIR server: `fhir.gateway.FhirGateway` over HTTP; tests pass a fake."""

    base_url: str

    def assume_written(self) -> None: ...

    def capabilities(self, *, refresh: bool = False) -> dict: ...

    def supports_transaction(self) -> bool: ...

    def read(self, resource_type: str, resource_id: str) -> dict: ...

    def search(self, resource_type: str, params: Mapping[str, str]) -> list[dict]: ...

    def search_page(self, resource_type: str, params: Mapping[str, str] | None = None,
                    page_url: str | None = None) -> dict: ...

    def read_patient_record(self, patient_id: str) -> PatientRecord: ...

    def transaction(self, bundle: dict) -> dict: ...

    def create(self, resource: dict, if_none_exist: str | None = None) -> dict: ...

    def delete(self, ref: str) -> None: ...

    def set_status(self, ref: str, status: str) -> dict: ...
