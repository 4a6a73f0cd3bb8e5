"""R3 indications: the qualifying (off-label) indications, who is likely to respond, the order's default reason.

Rule R3, quoted from docs/clinical-rules.md ("R3 Indications"), sources 000, 001, 002, 004:
    "All LDN use for pain is off-label. The best evidence is for chronic neuropathic pain:
    fibromyalgia (a 31-patient randomised trial in 004; a crossover study reported in 002), complex
    regional pain syndrome (types I and II), painful diabetic neuropathy, low back pain and
    neuropathic corneal pain (000, 004)."
    "Neuropathic pain and CRPS predict a better response (004, p=0.018); spondylosis a much worse one
    (004, p=0.00435). Both are shown as notes, never as blocks."
    "LDN comes after several failed treatments and a discussion of risks and benefits (000, 004). No
    qualifying indication on the active problem list is a caution, not a block."
Sources: 000 "Recommended naltrexone dosing and management for pain control" (clinical Q&A, June
2025); 002 "Low-dose naltrexone for pain" (compounding pharmacy article); 004 "Uses and dosing of
LDN in fibromyalgia, Crohn's disease and multiple sclerosis" (clinical Q&A, January 2026).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..classify import names_of, refs_with
from ..model import ConditionRole, ConditionSummary, Finding, Severity


def default_reasons(conds: Sequence[ConditionSummary]) -> tuple[str, ...]:
    """The order's reason: qualifying indications, else the Crohn's/MS diagnoses (R4)."""
    return (refs_with(conds, ConditionRole.INDICATION)
            or refs_with(conds, ConditionRole.CROHNS) + refs_with(conds, ConditionRole.MS))


def indication_findings(conds: Sequence[ConditionSummary]) -> list[Finding]:
    """A caution without a qualifying indication; otherwise the indication and the responder notes."""
    indications = refs_with(conds, ConditionRole.INDICATION)
    if not indications:
        return [Finding("R3", "000, 004", Severity.CAUTION,
                        "No qualifying indication on the active problem list (fibromyalgia, CRPS, painful "
                        "diabetic neuropathy, low back pain, neuropathic corneal pain, chronic neuropathic "
                        "pain). LDN is off-label, considered after failed lines of therapy and a risk/benefit "
                        "discussion.", (), "no-indication")]
    out = [Finding("R3", "000, 002, 004", Severity.INFO,
                   f"Qualifying off-label indication: {names_of(conds, indications)}. LDN is considered after "
                   "multiple failed lines of therapy, after a risk/benefit discussion.", indications,
                   "indication")]
    likely = refs_with(conds, ConditionRole.LIKELY_RESPONDER)
    if likely:
        out.append(Finding("R3", "004", Severity.INFO,
                           f"Neuropathic pain or CRPS ({names_of(conds, likely)}): more likely to respond (p=0.018).",
                           likely, "likely-responder"))
    unlikely = refs_with(conds, ConditionRole.UNLIKELY_RESPONDER)
    if unlikely:
        out.append(Finding("R3", "004", Severity.INFO,
                           f"Spondylosis ({names_of(conds, unlikely)}): much less likely to respond (p=0.00435).",
                           unlikely, "unlikely-responder"))
    return out
