"""Recorded FHIR server for gateway tests: serve a sample patient's searches through `responses`, optionally mangled."""

from __future__ import annotations

from collections.abc import Callable

from smart_app.fhir.gateway import SEARCHED_TYPES

BASE = "https://fhir.example.org/r4"
CAPABILITIES = {"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "resource": [
    {"type": t, "searchInclude": [f"{t}:medication"]} for t in SEARCHED_TYPES[:3]],
    "interaction": [{"code": "transaction"}]}]}

Mangle = Callable[[str, dict], dict]  # (searched resource type, searchset page) -> the page the server sends


def searchset(resources: list[dict], mode: str = "match", base: str = BASE) -> dict:
    entries = [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": mode}}
               for r in resources]
    return {"resourceType": "Bundle", "type": "searchset", "link": [{"relation": "self", "url": base}],
            "entry": entries}


def serve_patient(rsps, bundle: dict, mangle: Mangle | None = None, *, metadata: bool = True,
                  base: str = BASE) -> str:
    """Register metadata, the Patient read and one page per searched type for the Bundle's patient; its id.

    Each page holds the matching resources (Medications referenced from a type's resources are included).
    `mangle` may rewrite any page before it is sent: a hostile or broken server.
    """
    resources = [e["resource"] for e in bundle["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    medications = {f"Medication/{r['id']}": r for r in resources if r["resourceType"] == "Medication"}
    if metadata:
        rsps.get(f"{base}/metadata", json=CAPABILITIES)
    rsps.get(f"{base}/Patient/{patient['id']}", json=patient)
    for resource_type in SEARCHED_TYPES:
        matches = [r for r in resources if r["resourceType"] == resource_type]
        page = searchset(matches, base=base)
        refs = {(r.get("medicationReference") or {}).get("reference") for r in matches}
        page["entry"] += searchset([m for ref, m in medications.items() if ref in refs], "include", base)["entry"]
        rsps.get(f"{base}/{resource_type}", json=mangle(resource_type, page) if mangle else page)
    return patient["id"]
