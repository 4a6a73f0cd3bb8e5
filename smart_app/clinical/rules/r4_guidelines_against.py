"""R4 guidelines against: Crohn's disease and multiple sclerosis as the reason for the order.

Rule R4, quoted from docs/clinical-rules.md ("R4 Conditions where guidelines advise against LDN"),
sources 004 over 001, 002:
    "These concern LDN as a treatment for the condition, not a patient who happens to have it."
    "Crohn's disease: the Canadian Association of Gastroenterology recommends against naltrexone to
    bring about or keep remission (conditional recommendation, low or very low quality evidence;
    004). When Crohn's is the reason for the order, the app says 'recommended against' and asks for
    a written reason. The older favourable reports (001, 002) are shown as context."
    "Multiple sclerosis: efficacy is not shown despite acceptable safety (004). As the reason for
    the order it is at least a caution."
Sources: 004 "Uses and dosing of LDN in fibromyalgia, Crohn's disease and multiple sclerosis"
(clinical Q&A, January 2026); 001 "Typical naltrexone dose for reducing inflammation" (clinical
Q&A, July 2025); 002 "Low-dose naltrexone for pain" (compounding pharmacy article).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..classify import names_of, refs_with
from ..model import ConditionRole, ConditionSummary, Finding, Severity


def guideline_findings(conds: Sequence[ConditionSummary], reasons: Sequence[str]) -> list[Finding]:
    """Recommended against / insufficient evidence when Crohn's or MS is the reason; context otherwise."""
    out: list[Finding] = []
    crohns, ms = refs_with(conds, ConditionRole.CROHNS), refs_with(conds, ConditionRole.MS)
    crohns_reason = tuple(r for r in reasons if r in crohns)
    ms_reason = tuple(r for r in reasons if r in ms)
    if crohns_reason:
        out.append(Finding("R4", "004", Severity.NOT_RECOMMENDED,
                           f"Recommended against: {names_of(conds, crohns_reason)} as the reason for LDN. The "
                           "Canadian Association of Gastroenterology recommends against naltrexone to induce or "
                           "maintain remission (conditional; low / very low quality evidence). Proceeding "
                           "requires a recorded reason.", crohns_reason, "crohns-reason"))
    elif crohns:
        out.append(Finding("R4", "004", Severity.INFO,
                           f"{names_of(conds, crohns)}: guidelines recommend against LDN for Crohn's itself; the "
                           "order is for another indication.", crohns, "crohns-context"))
    if crohns:
        out.append(Finding("R4", "001, 002", Severity.INFO,
                           "Context: older sources (001, 002) report anti-inflammatory benefit in Crohn's; the "
                           "newer guideline summary (004, January 2026) overrides them.", crohns,
                           "crohns-older-sources"))
    if ms_reason:
        out.append(Finding("R4", "004", Severity.CAUTION,
                           f"Insufficient evidence: {names_of(conds, ms_reason)} as the reason for LDN - efficacy "
                           "is not shown despite safety and tolerability data.", ms_reason, "ms-reason"))
    elif ms:
        out.append(Finding("R4", "004", Severity.INFO,
                           f"{names_of(conds, ms)}: insufficient evidence for LDN in MS itself; the order is for "
                           "another indication.", ms, "ms-context"))
    return out
