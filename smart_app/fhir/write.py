"""Writing one signed order to the EHR and reading it back by its key (the FHIR side of signing).

With `transaction`: one Bundle, both or neither. Without: conditional creates in order, the order a draft until
its last step, undone when a step fails (`place_order`). `find_order` reads an order back by its key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import AppError, FhirServerError, WriteNotCompleted
from .build import ORDER_IDENTIFIER_SYSTEM, own_order_key, written_order
from .contract import Gateway, parse_reference, rewrite_references

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteResult:
    """What the EHR stored for one signed plan: "Type/id" per resource type."""

    refs: dict

    @property
    def medication_request(self) -> str | None:
        return self.refs.get("MedicationRequest")

    @property
    def care_plan(self) -> str | None:
        return self.refs.get("CarePlan")


def refused_before_commit(err: AppError) -> bool:
    """A 4xx answer (not 408): the server looked at the request and did not commit it."""
    status = getattr(err, "http_status", None)
    return isinstance(status, int) and 400 <= status < 500 and status != 408


def find_order(gateway: Gateway, key: str) -> dict | None:
    """The order this app wrote under `key`, read back from the server (no session needed), or None.

    The MedicationRequest is the commit marker: a transaction writes it with its CarePlan or not at
    all, and the sequential write makes it active only after its CarePlan exists.
    """
    found = gateway.search("MedicationRequest", {"identifier": f"{ORDER_IDENTIFIER_SYSTEM}|{key}"})
    ours = [r for r in found if own_order_key(r) == key]  # a server may ignore the identifier parameter
    return written_order(ours[0]) if ours else None


def find_care_plan(gateway: Gateway, key: str) -> str | None:
    """The reference of the CarePlan this app wrote with the order `key` (same identifier), or None."""
    found = gateway.search("CarePlan", {"identifier": f"{ORDER_IDENTIFIER_SYSTEM}|{key}"})
    ours = [r for r in found if own_order_key(r) == key and r.get("id")]
    return f"CarePlan/{ours[0]['id']}" if ours else None


def _ref_from_location(location: str | None) -> str | None:
    ref = parse_reference(location)
    return ref.local if ref else None


def written_refs(bundle: dict, response: dict) -> tuple[str, ...]:
    """"Type/id" of each entry a transaction wrote, from its response (the request URL when no Location came)."""
    return tuple(_ref_from_location((got.get("response") or {}).get("location")) or sent["request"]["url"]
                 for sent, got in zip(bundle["entry"], response.get("entry") or [], strict=False))


def place_order(gateway, bundle: dict) -> WriteResult:
    """Write the transaction; without transaction support, create in order (see `_place_sequentially`)."""
    if gateway.supports_transaction():
        response = gateway.transaction(bundle)
        refs = {}
        for sent, got in zip(bundle["entry"], response.get("entry") or [], strict=False):
            ref = _ref_from_location((got.get("response") or {}).get("location"))
            if ref is None and isinstance(got.get("resource"), dict):
                ref = f"{got['resource']['resourceType']}/{got['resource'].get('id')}"
            refs[sent["resource"]["resourceType"]] = ref
        if not refs.get("MedicationRequest") or not refs.get("CarePlan"):
            raise FhirServerError("transaction response without MedicationRequest/CarePlan locations")
        return WriteResult(refs)
    return _place_sequentially(gateway, bundle)


def _place_sequentially(gateway, bundle: dict) -> WriteResult:
    """Conditional creates one by one, the MedicationRequest as a draft; activating it is the last step.

    Order: MedicationRequest (status draft), CarePlan, Provenance, then PUT the MedicationRequest to
    active. So an active MedicationRequest always has its CarePlan: before the last step nothing is an
    active order, and the last step either lands (written) or not (the draft stays a draft). A failure
    before the last step deletes what was created (newest first); what cannot be deleted is reported
    by `WriteNotCompleted.left` and is still only a draft. Conditional creates make a retry resume: the
    same key finds the draft and the CarePlan and completes them. Needs update on MedicationRequest and
    delete on all three (smart.scopes.UNDO_NEEDS); `write_blockers` refuses to sign without them.
    """
    created: list[str] = []
    by_type: dict[str, str] = {}
    urns: dict[str, str] = {}
    mr_ref, mr_status = None, None
    try:
        for entry in bundle["entry"]:
            stored = _create_step(gateway, entry, urns)
            ref = f"{stored['resourceType']}/{stored['id']}"
            urns[entry["fullUrl"]] = ref
            created.append(ref)
            by_type[stored["resourceType"]] = ref
            if stored["resourceType"] == "MedicationRequest":
                mr_ref, mr_status = ref, stored.get("status")
    except FhirServerError as err:  # an order already active (a retry) is never undone
        raise WriteNotCompleted(err, () if mr_status == "active" else _undo(gateway, created)) from err
    if mr_status != "active":
        try:
            gateway.set_status(mr_ref, "active")
        except FhirServerError as err:  # unanswered: it may be active now, so nothing is deleted
            raise WriteNotCompleted(err, _undo(gateway, created) if refused_before_commit(err) else ()) from err
    return WriteResult(by_type)


def _create_step(gateway, entry: dict, urns: dict[str, str]) -> dict:
    resource = rewrite_references(entry["resource"], urns)
    if resource["resourceType"] == "MedicationRequest":
        resource["status"] = "draft"
    stored = gateway.create(resource, if_none_exist=entry["request"].get("ifNoneExist"))
    status = stored.get("status")
    if stored["resourceType"] == "MedicationRequest" and status not in (None, "draft", "active"):
        raise FhirServerError(f"an earlier order with this key is {status}", http_status=409, diagnostics=(
            f"An earlier order with this key is {status} in the chart; change the plan to sign a new one.",))
    return stored


def _undo(gateway, created: list[str]) -> tuple[str, ...]:
    """Delete what a failed sequential write created, newest first; the refs that could not be deleted."""
    left = []
    for ref in reversed(created):
        try:
            gateway.delete(ref)
        except AppError as err:
            log.error("could not undo %s after a failed sequential write (%s); it is a draft, needs review",
                      ref, type(err).__name__)
            left.append(ref)
    return tuple(left)
