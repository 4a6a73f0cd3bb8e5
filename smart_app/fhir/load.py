"""Load FHIR Bundles into a server: one idempotent transaction (PUT by type and id) per patient."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import requests

from ..errors import UnreadableInput
from .contract import parse_reference
from .gateway import FHIR_JSON
from .parse import patient_ref_of

log = logging.getLogger(__name__)


class LoadError(RuntimeError):
    """The server refused a transaction, or did not answer."""


@dataclass(frozen=True)
class LoadResult:
    """What one transaction did: the first resource it names, and its entries created / updated."""

    first: str
    created: int
    updated: int


def _id_of(reference: object, rtype: str) -> str | None:
    """The id a `rtype` reference (relative or absolute) names, else None."""
    ref = parse_reference(reference)
    return ref.id if ref and ref.resource_type == rtype else None


def _resources(bundle: object, source: str) -> list[dict]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise UnreadableInput(f"{source}: not a FHIR Bundle")
    found = []
    for index, entry in enumerate(bundle.get("entry") or []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not resource.get("resourceType") or not resource.get("id"):
            raise UnreadableInput(f"{source}: entry {index} has no resource with resourceType and id")
        if resource["resourceType"] != "OperationOutcome":
            found.append(resource)
    return found


def _owner(resource: dict) -> str | None:
    if resource["resourceType"] == "Patient":
        return resource["id"]
    return _id_of(patient_ref_of(resource), "Patient")


def _medication_of(resource: dict) -> str | None:
    ref = resource.get("medicationReference")
    return _id_of(ref.get("reference"), "Medication") if isinstance(ref, dict) else None


def patient_groups(bundle: object, source: str = "input") -> list[list[dict]]:
    """The Bundle's resources, one group per Patient (with the Medications its resources name).

    Resources that belong to no patient in the Bundle (a Practitioner, an unreferenced Medication)
    form one leading group of their own."""
    resources = _resources(bundle, source)
    medications = {r["id"]: r for r in resources if r["resourceType"] == "Medication"}
    groups: dict[str | None, list[dict]] = {None: []}
    groups.update({r["id"]: [] for r in resources if r["resourceType"] == "Patient"})
    used: set[str] = set()
    for resource in resources:
        if resource["resourceType"] == "Medication":
            continue
        owner = _owner(resource)
        group = groups[owner if owner in groups else None]
        group.append(resource)
        med = _medication_of(resource)
        if med is not None and med in medications and medications[med] not in group:
            group.append(medications[med])
            used.add(med)
    groups[None] += [m for mid, m in medications.items() if mid not in used]
    return [g for g in groups.values() if g]


def to_transaction(resources: Iterable[dict]) -> dict:
    """A transaction Bundle of `PUT <Type>/<id>` entries: loading it twice creates nothing new."""
    entries = [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def outcome_diagnostics(response: requests.Response) -> str:
    """The OperationOutcome diagnostics in an error response, else the start of its body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    issues = body.get("issue") if isinstance(body, dict) else None
    if not issues:
        return response.text[:500]
    return "; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues if isinstance(i, dict))


def post_transaction(base_url: str, resources: list[dict], session: requests.Session | None = None,
                     timeout: float = 60.0) -> LoadResult:
    """One transaction of PUTs; LoadError with the server's diagnostics when it is refused."""
    first = f"{resources[0]['resourceType']}/{resources[0]['id']}"
    try:
        response = (session or requests).post(base_url.rstrip("/"), json=to_transaction(resources), timeout=timeout,
                                              headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
    except requests.RequestException as exc:
        raise LoadError(f"loading the Bundle starting with {first}: the server did not answer "
                        f"({type(exc).__name__})") from exc
    if response.status_code >= 400:
        raise LoadError(f"loading the Bundle starting with {first} failed ({response.status_code}): "
                        f"{outcome_diagnostics(response)}")
    statuses = [str((e.get("response") or {}).get("status", "")) for e in response.json().get("entry") or []]
    created = sum(s.startswith("201") for s in statuses)
    return LoadResult(first, created, len(statuses) - created)


def load_each(base_url: str, bundles: Mapping[str, dict], session: requests.Session | None = None
              ) -> Iterator[LoadResult]:
    """Every Bundle (keyed by where it came from) loaded as one transaction per patient, in order.

    Every Bundle is checked before the first transaction is sent; each result is yielded once its
    transaction is done, so a LoadError leaves the earlier ones reported and the later ones unsent."""
    groups = [group for source, bundle in bundles.items() for group in patient_groups(bundle, source)]
    for group in groups:
        result = post_transaction(base_url, group, session)
        log.info("loaded %s: %d created, %d updated", result.first, result.created, result.updated)
        yield result


def load_bundles(base_url: str, bundles: Mapping[str, dict], session: requests.Session | None = None
                 ) -> list[LoadResult]:
    """`load_each`, all at once."""
    return list(load_each(base_url, bundles, session))
