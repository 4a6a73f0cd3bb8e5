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

READ_TYPES: tuple[str, ...] = (
    "Patient", "Condition", "MedicationRequest", "MedicationStatement", "MedicationDispense", "Medication",
)
WRITE_TYPES: tuple[str, ...] = ("MedicationRequest", "CarePlan", "Provenance")
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

    def reads(self, resource_type: str) -> bool:
        return "*" in self.can_read or resource_type in self.can_read

    def writes(self, resource_type: str) -> bool:
        return "*" in self.can_write or resource_type in self.can_write


def requested_scopes(capabilities: Iterable[str], launch_mode: str) -> str:
    """The space-separated scope string for an authorize request."""
    v2 = "permission-v2" in set(capabilities)
    read, write = (".rs", ".c") if v2 else (".read", ".write")
    context = "launch" if launch_mode == EHR_LAUNCH else "launch/patient"
    clinical = [f"patient/{t}{read}" for t in READ_TYPES] + [f"patient/{t}{write}" for t in WRITE_TYPES]
    return " ".join([context, *IDENTITY_SCOPES, "online_access", *clinical])


def granted_permissions(scope_string: str | None) -> Permissions:
    """Parse a granted scope string (v1 and v2 syntax, `*` wildcards) into Permissions."""
    read: set[str] = set()
    write: set[str] = set()
    restricted: set[str] = set()
    for scope in (scope_string or "").split():
        match = _CLINICAL.match(scope)
        if not match:
            continue
        _context, resource_type, permission, query = match.groups()
        can_read, can_write = _permission(permission)
        if query and can_read:
            restricted.add(resource_type)
            can_read = False
        if can_read:
            read.add(resource_type)
        if can_write:
            write.add(resource_type)
    return Permissions(frozenset(read), frozenset(write), frozenset(restricted - read))


def _permission(permission: str) -> tuple[bool, bool]:
    """(read+search, create) for a v1 (`read`/`write`/`*`) or v2 (`cruds` letters) permission."""
    if permission in _V1_READ | _V1_WRITE:
        return permission in _V1_READ, permission in _V1_WRITE
    letters = set(permission)
    if letters <= set("cruds"):
        return {"r", "s"} <= letters, "c" in letters
    return False, False


def missing_write(granted: Permissions | str | None) -> list[str]:
    """The WRITE_TYPES the grant does not let us create, in WRITE_TYPES order (empty: signing allowed)."""
    permissions = granted if isinstance(granted, Permissions) else granted_permissions(granted)
    return [t for t in WRITE_TYPES if not permissions.writes(t)]


def missing_read(granted: Permissions | str | None) -> list[str]:
    """The READ_TYPES the grant does not let us read and search in full."""
    permissions = granted if isinstance(granted, Permissions) else granted_permissions(granted)
    return [t for t in READ_TYPES if not permissions.reads(t)]
