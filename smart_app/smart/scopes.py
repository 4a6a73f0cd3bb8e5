"""The least-privilege SMART scopes we request, and what a granted scope string allows.

Syntax follows SMART App Launch 2.2 ("Scopes and Launch Context"): v2 `<context>/<Type>.<cruds>`
(`patient/Condition.rs`, `patient/MedicationRequest.c`) when the server lists the `permission-v2`
capability, v1 `<context>/<Type>.read|write|*` otherwise. Written here: fhirclient only ever
asks for a fixed broad v1 scope and does not parse grants.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from smart_app.fhir.contract import CONTACT_READ_TYPES, DELETED_TYPES, ORDER_TYPES, READ_TYPES, UPDATED_TYPES

WRITE_TYPES = ORDER_TYPES  # the create scopes signing needs
# Beyond create: what the sequential write (servers without `transaction`) needs to activate its draft
# MedicationRequest and to remove what it created when a later step fails (services.place_order).
UNDO_NEEDS: dict[str, str] = {t: ("u" if t in UPDATED_TYPES else "") + ("d" if t in DELETED_TYPES else "")
                              for t in WRITE_TYPES}
_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
# The follow-up (issue 12): read back our own CarePlan/baseline/review record, write the review (pain score,
# CarePlan and order updates). Not READ_TYPES: the assessment does not depend on them, so not granting them
# never makes it "cannot determine"; without them the follow-up is not offered.
FOLLOW_UP_SCOPES = {True: ("patient/CarePlan.rus", "patient/Observation.crd", "patient/Provenance.s"),
                    False: ("patient/CarePlan.read", "patient/Observation.read", "patient/Observation.write",
                            "patient/Provenance.read")}
# The patient handout's prescriber and clinic (issue 9): read by id only. Optional like the follow-up's: without
# them the handout leaves lines to write in.
CONTACT_SCOPES = {True: tuple(f"user/{t}.r" for t in CONTACT_READ_TYPES),
                  False: tuple(f"user/{t}.read" for t in CONTACT_READ_TYPES)}
IDENTITY_SCOPES: tuple[str, ...] = ("openid", "fhirUser")
EHR_LAUNCH, STANDALONE_LAUNCH = "ehr", "standalone"

_CLINICAL = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([A-Za-z*]+)(\?.*)?$")
_V1_READ, _V1_WRITE = {"read", "*"}, {"write", "*"}


@dataclass(frozen=True)
class Permissions:
    """Resource types the token lets us read+search (`can_read`) and create (`can_write`).

    `restricted` holds types granted only with a v2 query filter (`patient/Condition.rs?category=x`):
    such a grant does not show us every resource of the type, so it is not counted in `can_read`.
    """

    can_read: frozenset[str]
    can_write: frozenset[str]
    restricted: frozenset[str] = frozenset()
    actions: frozenset[tuple[str, str]] = frozenset()  # (type or "*", v2 letter) granted without a filter

    def reads(self, resource_type: str) -> bool:
        return "*" in self.can_read or resource_type in self.can_read

    def writes(self, resource_type: str) -> bool:
        return "*" in self.can_write or resource_type in self.can_write

    def allows(self, resource_type: str, letter: str) -> bool:
        """Whether one interaction (v2 letter: c r u d s) on the type is granted."""
        return (resource_type, letter) in self.actions or ("*", letter) in self.actions


def requested_scopes(capabilities: Iterable[str], launch_mode: str) -> str:
    """The space-separated scope string for an authorize request."""
    v2 = "permission-v2" in set(capabilities)
    context = "launch" if launch_mode == EHR_LAUNCH else "launch/patient"
    if v2:
        writes = [f"patient/{t}.c{UNDO_NEEDS.get(t, '')}" for t in WRITE_TYPES]
        clinical = [f"patient/{t}.rs" for t in READ_TYPES] + writes
    else:  # v1 .write already covers update and delete
        clinical = [f"patient/{t}.read" for t in READ_TYPES] + [f"patient/{t}.write" for t in WRITE_TYPES]
    return " ".join([context, *IDENTITY_SCOPES, "online_access", *clinical, *FOLLOW_UP_SCOPES[v2],
                     *CONTACT_SCOPES[v2]])


def granted_permissions(scope_string: str | None) -> Permissions:
    """Parse a granted scope string (v1 and v2 syntax, `*` wildcards) into Permissions."""
    read: set[str] = set()
    write: set[str] = set()
    restricted: set[str] = set()
    actions: set[tuple[str, str]] = set()
    for scope in (scope_string or "").split():
        match = _CLINICAL.match(scope)
        if not match:
            continue
        _context, resource_type, permission, query = match.groups()
        letters = _letters(permission)
        can_read, can_write = {"r", "s"} <= letters, "c" in letters
        if query and can_read:
            restricted.add(resource_type)
            can_read = False
        if can_read:
            read.add(resource_type)
        if can_write:
            write.add(resource_type)
        if not query:
            actions.update((resource_type, letter) for letter in letters)
    return Permissions(frozenset(read), frozenset(write), frozenset(restricted - read), frozenset(actions))


def _letters(permission: str) -> set[str]:
    """The v2 letters a v1 (`read`/`write`/`*`) or v2 (`cruds` letters) permission grants."""
    if permission in _V1_READ | _V1_WRITE:
        return ({"r", "s"} if permission in _V1_READ else set()) | (
            {"c", "u", "d"} if permission in _V1_WRITE else set())
    letters = set(permission)
    return letters if letters <= set("cruds") else set()


def missing_write(granted: Permissions | str | None) -> list[str]:
    """The WRITE_TYPES the grant does not let us create, in WRITE_TYPES order (empty: signing allowed)."""
    permissions = granted if isinstance(granted, Permissions) else granted_permissions(granted)
    return [t for t in WRITE_TYPES if not permissions.writes(t)]


def missing_read(granted: Permissions | str | None) -> list[str]:
    """The READ_TYPES the grant does not let us read and search in full."""
    permissions = granted if isinstance(granted, Permissions) else granted_permissions(granted)
    return [t for t in READ_TYPES if not permissions.reads(t)]


def missing_undo(granted: Permissions) -> list[str]:
    """What the sequential write would need to undo itself but was not granted ("update MedicationRequest")."""
    return [f"{_VERBS[letter]} {t}" for t, letters in UNDO_NEEDS.items() for letter in letters
            if not granted.allows(t, letter)]
