"""CDS Hooks cards (uuid, summary <= 140, indicator, source, suggestions, overrideReasons, links) from assessments.

No rule logic here: the decision, the findings and their texts come from the clinical core; this
module words them for the EHR's order screen and adds the actions the EHR can take.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from ..clinical.model import SEVERITY_DECISION, Assessment, Decision, Finding, MedicationSummary, Severity
from ..clinical.terminology import CANONICAL_BASE

SUMMARY_MAX = 139  # the spec: a "<140-character summary"
OVERRIDE_SYSTEM = CANONICAL_BASE + "/CodeSystem/ldn-cds-override-reason"
RULE_TITLES = {
    "R1": "Dose, timing, titration",
    "R2": "Opioid exposure - the central safety check",
    "R3": "Indications (all off-label)",
    "R4": "Where guidelines say no or not proven",
    "R5": "Contraindications and holds",
    "R6": "Follow-up and monitoring",
}
_RECORD_WRONG = ("record-incorrect", "The record is wrong or out of date")
_REVIEWED = ("benefit-outweighs-risk", "Clinician reviewed: benefit outweighs risk")
NALTREXONE_OVERRIDES = (("opioid-stopped", "Opioid stopped; first dose set after the washout"), _RECORD_WRONG,
                        _REVIEWED)
OPIOID_OVERRIDES = (("naltrexone-held", "Naltrexone is being held or stopped"), _RECORD_WRONG, _REVIEWED)
OPIOID_CODES = ("opioid-current", "opioid-washout")
_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}
BLOCKED = (Decision.CONTRAINDICATED, Decision.WAIT_WASHOUT)  # no naltrexone order for today's date


# --- naltrexone in draftOrders -----------------------------------------------------------------

def naltrexone(assessment: Assessment, draft_ref: str, drug: str, base_url: str) -> dict:
    """critical (contraindicated), warning (cannot-determine, not-recommended) or info (eligible)."""
    driving = _driving(assessment)
    decision = assessment.decision
    if decision in BLOCKED:
        indicator, summary = "critical", _contraindicated_summary(assessment, driving)
    elif decision is Decision.CANNOT_DETERMINE:
        indicator = "warning"
        summary = f"Opioid exposure cannot be ruled out (data could not be read or classified): {drug}"
    elif decision is Decision.NOT_RECOMMENDED:
        indicator, summary = "warning", f"{drug} is recommended against for this patient's indication (R4)"
    elif decision is Decision.ELIGIBLE_WITH_CAUTIONS:
        indicator, summary = "info", f"{drug}: no opioid exposure or contraindication found; cautions apply"
    else:
        indicator, summary = "info", f"{drug}: no opioid exposure or contraindication found; plan it in the LDN app"
    card = _card(indicator, summary, driving, base_url, NALTREXONE_OVERRIDES, _also(assessment, driving))
    card["extension"]["org.ldn-app.decision"] = decision.value
    if decision in BLOCKED:
        card.update(selectionBehavior="at-most-one", suggestions=[_remove_draft(draft_ref, drug)])
    else:
        card["links"] = [_app_link("Open the LDN app for this patient (titration, care plan)", base_url)]
    return card


def _contraindicated_summary(assessment: Assessment, driving: Sequence[Finding]) -> str:
    opioid_findings = [f for f in driving if f.code in OPIOID_CODES]
    if not opioid_findings:
        return f"Naltrexone contraindicated: {driving[0].text}"
    names = _names(assessment.medications, (r for f in opioid_findings for r in f.resources))
    if assessment.earliest_start_date:
        return f"Naltrexone not before {assessment.earliest_start_date.isoformat()}: opioid exposure ({names})"
    return f"No naltrexone until {assessment.washout_days} days after the last dose of current opioid {names}"


def _remove_draft(draft_ref: str, drug: str) -> dict:
    return {"label": f"Remove the draft order for {drug}", "uuid": str(uuid.uuid4()), "isRecommended": True,
            "actions": [{"type": "delete", "description": f"Remove the draft order {draft_ref} ({drug}).",
                         "resourceId": draft_ref}]}


# --- an opioid in draftOrders --------------------------------------------------------------------

def opioid_on_naltrexone(assessment: Assessment, opioid: str, current: Sequence[MedicationSummary],
                         base_url: str) -> dict:
    """warning: naltrexone blocks the opioid; hold it as R5 says; a link to the plan."""
    taking = ", ".join(f"{m.name} ({m.resource}, status {m.status})" for m in current)
    blocks = Finding("R2", "000, 001, 002, 003, 004", Severity.CAUTION,
                     f"The patient takes naltrexone: {taking}. Naltrexone blocks opioid analgesia, so {opioid} "
                     "will not work as expected while it is taken.", tuple(m.resource for m in current),
                     "naltrexone-blocks-opioid")
    hold = [f for f in assessment.findings if f.code == "surgery-hold"]
    summary = f"Patient takes naltrexone ({_names(current, (m.resource for m in current))}): it blocks {opioid}; " \
              "hold it (R5)"
    card = _card("warning", summary, [blocks, *hold], base_url, OPIOID_OVERRIDES)
    card["links"] = [_app_link("Open the LDN plan (hold before opioid analgesia)", base_url)]
    return card


def opioid_unknown_naltrexone(assessment: Assessment, opioid: str, unsure: Sequence[MedicationSummary],
                              base_url: str) -> dict:
    """warning: we could not tell whether the patient takes naltrexone (which would block the opioid)."""
    why = [f for f in assessment.findings if f.severity is Severity.CANNOT_DETERMINE
           and (f.code == "data-unreadable" or set(f.resources) & {m.resource for m in unsure})]
    summary = f"Could not check whether the patient takes naltrexone, which would block {opioid}"
    card = _card("warning", summary, why, base_url, OPIOID_OVERRIDES)
    card["links"] = [_app_link("Open the LDN app for this patient", base_url)]
    return card


# --- shared shape --------------------------------------------------------------------------------

def _driving(assessment: Assessment) -> list[Finding]:
    """The findings that force the decision, most severe first."""
    return [f for f in assessment.findings if SEVERITY_DECISION[f.severity] is assessment.decision]


def _also(assessment: Assessment, shown: Sequence[Finding]) -> list[Finding]:
    """The assessment's other findings above info (shown after the ones that decided the card)."""
    return [f for f in assessment.findings if f not in shown and _SEVERITY_RANK[f.severity] > 0]


def _card(indicator: str, summary: str, findings: Sequence[Finding], base_url: str,
          overrides: Iterable[tuple[str, str]], also: Sequence[Finding] = ()) -> dict:
    rules = list(dict.fromkeys(f.rule for f in findings)) or ["R2"]
    sources = list(dict.fromkeys(s.strip() for f in findings for s in f.source.split(",")))
    return {
        "uuid": str(uuid.uuid4()),
        "summary": _short(summary),
        "indicator": indicator,
        "detail": _detail(findings, also),
        "source": {"label": f"LDN decision support - rule {', '.join(rules)} (source {', '.join(sources)})",
                   "url": f"{base_url}/cds-services/rules#{rules[0]}"},
        "overrideReasons": [{"system": OVERRIDE_SYSTEM, "code": code, "display": display}
                            for code, display in overrides],
        "extension": {"org.ldn-app.rules": rules, "org.ldn-app.sources": sources,
                      "org.ldn-app.findings": [f.code for f in findings]},
    }


def _detail(findings: Sequence[Finding], also: Sequence[Finding]) -> str:
    """Markdown: each finding with its rule and source, then the other findings worth knowing."""
    lines = [f"- **{f.rule}** ({f.source}): {_md(f.text)}" for f in findings]
    lines += [f"- Also **{f.rule}** ({f.source}): {_md(f.text)}" for f in also]
    return "\n".join(lines) or "-"


def _md(text: str) -> str:
    """Plain text for a Markdown list item: characters Markdown would act on are escaped."""
    return "".join("\\" + ch if ch in "\\`*_{}[]<>#|" else ch for ch in text.replace("\n", " "))


def _names(medications: Iterable[MedicationSummary], refs: Iterable[str]) -> str:
    by_ref = {m.resource: m.name for m in medications}
    return ", ".join(dict.fromkeys(by_ref.get(r, r) for r in refs))


def _short(text: str) -> str:
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1].rstrip() + "\u2026"


def _app_link(label: str, base_url: str) -> dict:
    return {"label": label, "url": f"{base_url}/launch", "type": "smart"}
