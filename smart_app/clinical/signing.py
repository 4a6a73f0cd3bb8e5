"""What each decision requires before an order may be signed (R2, R4, R5): a pure policy over an Assessment.

- A blocking finding (a contraindication, or an opioid washout not over on the start date) refuses the
  order, whatever the clinician enters.
- `not-recommended` (R4) needs the clinician's written reason to proceed; `cannot-determine` needs their
  attestation that they checked what the app could not read or classify.
- Every order needs the condition it is for.
- At the efficacy review, a new order (continue, adjust) is also refused while an opioid's use since the LDN
  start cannot be dated (R2: the opioid and LDN block each other).
The first unmet requirement is the answer; the services turn it into the app's errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from .model import BLOCKING, Assessment, Decision, Finding, Severity
from .rules.r2_opioid_washout import opioid_alerts


class Need(StrEnum):
    """Something the clinician must give before this order can be signed."""

    OVERRIDE_REASON = "override-reason"
    ATTESTATION = "attestation"
    ORDER_REASON = "order-reason"


DECISION_NEEDS = {  # decision -> what it requires; refused decisions come from BLOCKING findings
    Decision.NOT_RECOMMENDED: Need.OVERRIDE_REASON,
    Decision.CANNOT_DETERMINE: Need.ATTESTATION,
}
NEED_MESSAGES = {
    Need.OVERRIDE_REASON: "LDN is recommended against for the chosen reason (R4): type the reason to proceed.",
    Need.ATTESTATION: ("The assessment could not determine everything (cannot-determine): confirm the "
                       "attestation that you checked the unreadable or unclassified data."),
    Need.ORDER_REASON: "Choose the condition this order is for (the reason for the order).",
}
WASHOUT_LEAD = "Not yet - opioid washout: cannot be signed for this start date."
CONTRAINDICATED_LEAD = "Contraindicated - cannot be signed."


@dataclass(frozen=True)
class Refusal:
    """No input makes this order signable for this start date."""

    lead: str
    findings: tuple[Finding, ...]

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(f"{f.rule}: {f.text}" for f in self.findings)


def refusal(assessment: Assessment) -> Refusal | None:
    """The blocking findings, with the lead that says why (washout only, or a contraindication)."""
    blocking = tuple(f for f in assessment.findings if f.severity in BLOCKING)
    if not blocking:
        return None
    washout_only = all(f.severity is Severity.WAIT for f in blocking)
    return Refusal(WASHOUT_LEAD if washout_only else CONTRAINDICATED_LEAD, blocking)


def unmet_need(assessment: Assessment, *, override_reason: str | None, attestation: str | None) -> Need | None:
    """The first requirement of a signable assessment that the clinician's input leaves unmet."""
    given = {Need.OVERRIDE_REASON: override_reason, Need.ATTESTATION: attestation}
    need = DECISION_NEEDS.get(assessment.decision)
    if need is not None and not (given[need] or "").strip():
        return need
    return None if assessment.reasons else Need.ORDER_REASON


def signing_verdict(assessment: Assessment, *, override_reason: str | None,
                    attestation: str | None) -> Refusal | Need | None:
    """None when the order may be signed; else the Refusal, or the first Need the clinician must meet."""
    return refusal(assessment) or unmet_need(assessment, override_reason=override_reason, attestation=attestation)


def new_order_blockers(assessment: Assessment, since: date) -> tuple[Finding, ...]:
    """At the review: what refuses a new order now (blocking findings), plus opioids not datable since `since`."""
    undated = tuple(a for a in opioid_alerts(assessment.medications, since) if a.severity is Severity.CANNOT_DETERMINE)
    return tuple(f for f in assessment.findings if f.severity in BLOCKING) + undated
