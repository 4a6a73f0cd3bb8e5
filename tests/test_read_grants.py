"""Issue 8 item 1: what the token may read feeds the decision; a partial grant is never 'eligible'."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smart_app.errors import FhirAuthError
from smart_app.fhir.gateway import PatientRecord
from smart_app.samples import SAMPLE_AS_OF, load_sample
from smart_app.services import assess_patient
from smart_app.smart.oauth import SmartContext
from smart_app.smart.scopes import READ_TYPES, missing_read

CLEARED = {"cannot-determine", "contraindicated"}


class RecordGateway:
    """Serves one sample's resources, or refuses the read as the EHR would."""

    def __init__(self, pid: str, error: Exception | None = None):
        resources = [e["resource"] for e in load_sample(pid)["entry"]]
        by_type: dict[str, list] = {}
        for r in resources[1:]:
            by_type.setdefault(r["resourceType"], []).append(r)
        self.record = PatientRecord(patient=resources[0], resources=by_type, medications={})
        self.error = error

    def read_patient_record(self, patient_id):
        if self.error:
            raise self.error
        return self.record


def assess_with_scope(scope: str, pid: str = "ldn-fibromyalgia"):
    assessment, _ = assess_patient(RecordGateway(pid), pid, as_of=SAMPLE_AS_OF, unreadable_types=missing_read(scope))
    return assessment


def full_grant(v2: bool) -> list[str]:
    return [f"patient/{t}.{'rs' if v2 else 'read'}" for t in READ_TYPES]


def test_a_full_read_grant_leaves_an_eligible_patient_eligible():
    assert assess_with_scope(" ".join(full_grant(True))).decision.value == "eligible"
    assert assess_with_scope("patient/*.read").decision.value == "eligible"


@pytest.mark.parametrize("grant, missing", [
    ("patient/MedicationRequest.rs?status=active", "MedicationRequest"),
    ("patient/Condition.rs?category=problem-list-item", "Condition"),
    ("patient/MedicationStatement.r", "MedicationStatement"),
    ("", "MedicationDispense"),
])
def test_a_filtered_or_missing_read_gives_cannot_determine_naming_the_type(grant, missing):
    scope = " ".join([s for s in full_grant(True) if f"/{missing}." not in s] + [grant])
    assessment = assess_with_scope(scope)
    assert assessment.decision.value == "cannot-determine"
    texts = [f.text for f in assessment.findings if f.code == "data-unreadable"]
    assert any(missing in t for t in texts), texts


@pytest.mark.parametrize("status", [401, 403])
def test_a_read_refused_with_401_or_403_gives_cannot_determine_naming_the_type(status):
    refused = FhirAuthError(f"search MedicationRequest page 1: HTTP {status}", http_status=status)
    assessment, _ = assess_patient(RecordGateway("ldn-fibromyalgia", refused), "ldn-fibromyalgia",
                                   as_of=SAMPLE_AS_OF)
    assert assessment.decision.value == "cannot-determine"
    assert any("MedicationRequest" in f.text and f"HTTP {status}" in f.text for f in assessment.findings)


def test_the_launch_context_counts_a_filtered_grant_as_missing_read():
    ctx = SmartContext.from_stored("launch-1", {
        "iss": "https://ehr.example/fhir", "patient": "p1", "launch_mode": "ehr", "expires_at": 0, "csrf": "c",
        "scope": " ".join(full_grant(True)[:2] + ["patient/MedicationRequest.rs?status=active"]
                          + full_grant(True)[3:])})
    assert ctx.missing_read == ("MedicationRequest",)


@st.composite
def restricted_grants(draw):
    """A grant string in v1 or v2 syntax in which at least one needed type is missing or filtered."""
    v2 = draw(st.booleans())
    restricted = draw(st.sets(st.sampled_from(READ_TYPES), min_size=1))
    scopes = []
    for t in READ_TYPES:
        if t not in restricted:
            scopes.append(f"{draw(st.sampled_from(['patient', 'user']))}/{t}.{'rs' if v2 else 'read'}")
            continue
        how = draw(st.sampled_from(["absent", "filter", "read-only", "write-only"]))
        if how == "filter":
            query = draw(st.sampled_from(["status=active", "category=x", "_lastUpdated=gt2025"]))
            scopes.append(f"patient/{t}.rs?{query}")
        elif how == "read-only":
            scopes.append(f"patient/{t}.r")
        elif how == "write-only":
            scopes.append(f"patient/{t}.{'c' if v2 else 'write'}")
    scopes += ["launch", "openid", "fhirUser"]
    return " ".join(draw(st.permutations(scopes)))


@settings(max_examples=150, deadline=None)
@given(scope=restricted_grants(), pid=st.sampled_from(["ldn-fibromyalgia", "ldn-crps", "ldn-low-back-pain",
                                                      "ldn-no-indication", "ldn-ms"]))
def test_no_restricted_grant_ever_ends_eligible(scope, pid):
    assert assess_with_scope(scope, pid).decision.value in CLEARED
