"""Plain, frozen data the clinical rules work on: no FHIR library, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .mme import Dosing

OWN_ORDER_SYSTEM = "https://fhir.ldn-app.org/identifier/ldn-order"  # the identifier system of the orders we write


class Decision(StrEnum):
    """The overall answer, most severe first in `DECISION_ORDER`."""

    ELIGIBLE = "eligible"
    ELIGIBLE_WITH_CAUTIONS = "eligible-with-cautions"
    NOT_RECOMMENDED = "not-recommended"
    WAIT_WASHOUT = "wait-washout"  # not yet: past opioid use, the washout ends on earliest_start_date
    CANNOT_DETERMINE = "cannot-determine"
    CONTRAINDICATED = "contraindicated"


class Severity(StrEnum):
    """How much a finding weighs; each maps to the decision it forces."""

    INFO = "info"
    CAUTION = "caution"
    NOT_RECOMMENDED = "not-recommended"
    WAIT = "wait"  # blocks a first dose on this start date only (opioid washout)
    CANNOT_DETERMINE = "cannot-determine"
    CONTRAINDICATION = "contraindication"


SEVERITY_DECISION = {
    Severity.INFO: Decision.ELIGIBLE,
    Severity.CAUTION: Decision.ELIGIBLE_WITH_CAUTIONS,
    Severity.NOT_RECOMMENDED: Decision.NOT_RECOMMENDED,
    Severity.WAIT: Decision.WAIT_WASHOUT,
    Severity.CANNOT_DETERMINE: Decision.CANNOT_DETERMINE,
    Severity.CONTRAINDICATION: Decision.CONTRAINDICATED,
}
# Least to most severe: the decision is the most severe one any finding forces. Unknown data outranks a
# washout (waiting does not make it known); a washout never becomes signable through an attestation.
DECISION_ORDER = (
    Decision.ELIGIBLE,
    Decision.ELIGIBLE_WITH_CAUTIONS,
    Decision.NOT_RECOMMENDED,
    Decision.WAIT_WASHOUT,
    Decision.CANNOT_DETERMINE,
    Decision.CONTRAINDICATED,
)


BLOCKING = (Severity.WAIT, Severity.CONTRAINDICATION)  # no order for this start date, whatever is attested


class MedClass(StrEnum):
    """What a medication is, for the purposes of R2 and R5."""

    OPIOID = "opioid"
    OPIOID_ANTIDIARRHEAL = "opioid-antidiarrheal"
    OPIOID_ANTAGONIST = "opioid-antagonist"
    NALTREXONE = "naltrexone"
    NON_OPIOID = "non-opioid"
    UNCLASSIFIED = "unclassified"


class ConditionRole(StrEnum):
    """What a diagnosis is to the rules: the ValueSet it falls in (one diagnosis may have several roles)."""

    INDICATION = "indication"  # R3 qualifying indication
    LIKELY_RESPONDER = "likely-responder"  # R3 note: neuropathic pain, CRPS
    UNLIKELY_RESPONDER = "unlikely-responder"  # R3 note: spondylosis
    CROHNS = "crohns"  # R4 recommended against
    MS = "ms"  # R4 insufficient evidence
    HEPATIC = "hepatic"  # R5 contraindication: acute hepatitis, decompensated liver disease
    LIVER_CAUTION = "liver-caution"  # R5 caution: chronic liver disease without decompensation
    OUD = "oud"  # R2 opioid use disorder
    OUD_REMISSION = "oud-remission"  # R2 opioid use disorder in remission


class ExposureState(StrEnum):
    """What a medication record says about use, once status and dates are read."""

    CURRENT = "current"  # active, on-hold, intended, in-progress: ongoing, no end in sight
    ENDED = "ended"  # completed / stopped with a known last date
    NONE = "none"  # entered-in-error, not-taken, cancelled, declined: not exposure at all
    UNKNOWN = "unknown"  # unknown/missing status, missing or contradictory dates


@dataclass(frozen=True)
class Coding:
    system: str | None
    code: str | None
    display: str | None = None


@dataclass(frozen=True)
class DrugReading:
    """One description of a record's drug: a CodeableConcept (the record's, its Medication's, an ingredient's)."""

    source: str  # where it was read: "medicationCodeableConcept", "Medication/9.ingredient[0].itemCodeableConcept"
    codings: tuple[Coding, ...] = ()
    names: tuple[str, ...] = ()  # text, coding displays, reference display
    ingredient: bool = False  # an ingredient of the product (one of several), not the product itself


@dataclass(frozen=True)
class MedicationExposure:
    """One medication record (MedicationStatement / Request / Dispense) as the rules see it."""

    resource: str  # "MedicationRequest/123"
    codings: tuple[Coding, ...]  # every coding of `readings`, in order
    names: tuple[str, ...]  # every name of `readings` (text, coding displays, reference displays), once each
    status: str | None
    state: ExposureState
    start: date | None = None
    last_exposure: date | None = None  # last day of use (ENDED), None otherwise
    date_problem: str | None = None  # why state is UNKNOWN, in plain words
    readings: tuple[DrugReading, ...] = ()  # each description of the drug: medication[x], Medication, ingredients
    free_text: tuple[str, ...] = ()  # dosage texts and notes, where a drug may be named in words
    unreadable: str | None = None  # why part of the drug's description could not be read, in plain words
    bound: str | None = None  # ENDED with no recorded end: last_exposure is the latest possible day, and why
    identifiers: tuple[tuple[str, str], ...] = ()  # (system, value) of the record's business identifiers
    dosing: Dosing | None = None  # sig, one fill's supply, prescriber: shown in the history, read for MME/day

    @property
    def own_order_key(self) -> str | None:
        """The order key when this app wrote the record (our identifier system), else None."""
        return next((value for system, value in self.identifiers if system == OWN_ORDER_SYSTEM), None)

    @property
    def resource_type(self) -> str:
        return self.resource.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.names[0] if self.names else "(no readable name)"


@dataclass(frozen=True)
class Classification:
    category: MedClass
    evidence: str  # e.g. "RxNorm 7804 (oxycodone) in ValueSet ldn-opioids", "name 'tramadol'"
    ingredient: str | None = None  # matched ingredient / term
    conflict: str | None = None  # readings of the drug that disagree with the (more dangerous) category
    text_mentions: str | None = None  # opioids named only in free text (dosage text, notes)


@dataclass(frozen=True)
class Diagnosis:
    """One Condition as the rules see it."""

    resource: str  # "Condition/7"
    codings: tuple[Coding, ...]
    text: str | None
    clinical_status: str | None
    verification_status: str | None
    onset: date | None = None
    abatement: date | None = None

    @property
    def name(self) -> str:
        if self.text:
            return self.text
        for c in self.codings:
            if c.display:
                return c.display
        return "(unnamed condition)"


@dataclass(frozen=True)
class Finding:
    rule: str  # "R2"
    source: str  # "004" or "003, 004"
    severity: Severity
    text: str  # plain language, for the clinician
    resources: tuple[str, ...] = ()
    code: str = ""  # stable machine id, e.g. "opioid-current"


@dataclass(frozen=True)
class MedicationSummary:
    resource: str
    name: str
    classification: MedClass
    evidence: str
    status: str | None
    state: ExposureState
    last_exposure: date | None
    date_problem: str | None = None


@dataclass(frozen=True)
class ConditionSummary:
    resource: str
    name: str
    categories: tuple[ConditionRole, ...]  # value-set roles
    counts: bool  # active and not refuted / entered-in-error
    clinical_status: str | None
    verification_status: str | None


@dataclass(frozen=True)
class Assessment:
    patient: str  # Patient id
    as_of: date
    start_date: date  # the first-dose date this assessment is for (as_of unless given)
    washout_days: int
    decision: Decision
    findings: tuple[Finding, ...]
    medications: tuple[MedicationSummary, ...]
    conditions: tuple[ConditionSummary, ...]
    earliest_start_date: date | None  # None while an opioid is current or exposure unknown
    indications: tuple[str, ...] = ()  # Condition refs that qualify under R3
    reasons: tuple[str, ...] = ()  # Condition refs the order is for (default: indications)

    @property
    def can_sign(self) -> bool:
        """No contraindication and no washout for this start date (other decisions need input, not a date)."""
        return not any(f.severity in BLOCKING for f in self.findings)


@dataclass(frozen=True)
class TitrationStep:
    sequence: int
    dose_mg: float
    start: date
    end: date | None  # inclusive last day; None for the final (maintenance) step


@dataclass(frozen=True)
class TitrationRequest:
    start: date
    start_dose_mg: float = 1.5
    step_mg: float = 1.5
    interval_days: int = 14
    target_mg: float = 4.5
    supply_days: int = 30


@dataclass(frozen=True)
class OrderPlan:
    """Everything the builders need to write one signed decision back."""

    patient: str
    assessment: Assessment
    titration: TitrationRequest
    steps: tuple[TitrationStep, ...]
    reasons: tuple[str, ...]  # Condition refs
    requester: str | None  # "Practitioner/1" (fhirUser) or None
    authored_on: date
    override_reason: str | None = None  # required for not-recommended
    other_reason: str | None = None  # required when a reason is not an R3 indication ("Other")
    attestation: str | None = None  # required for cannot-determine
    baseline_pain: int | None = None  # 0-10 NRS at the start (R6), written as an Observation
