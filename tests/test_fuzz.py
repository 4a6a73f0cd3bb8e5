"""Issue 16 item 9: structural mutations of the sample patients, through the CLI and through a hostile FHIR server.

Property: never a crash; never `eligible`/`eligible-with-cautions` when the patient's opioid evidence survives the
mutation (every mutation here keeps it readable or makes it unreadable), or when a mutation makes a medication
or condition record unreadable. Derandomized, no example database: the same cases every run (see FUZZ_CASES).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass

import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smart_app.cli import main
from smart_app.fhir.gateway import FhirGateway
from smart_app.samples import SAMPLE_AS_OF, load_sample, sample_ids
from smart_app.services import assess_data, read_patient
from tests.recorded_fhir import BASE, serve_patient

SAFE = {"eligible", "eligible-with-cautions"}
BLOCKING = {"opioid-current", "opioid-washout", "opioid-undated"}
FUZZ_CASES = {"cli": 1000, "gateway": 200}
FUZZ = settings(derandomize=True, database=None, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RETYPED = [0, -1, 2025, 1e308, 10**30, True, "", "x", [], {}]
INVISIBLE = ["\u200b", "\u00ad", "\u200d", "\u2060", "\ufeff"]
LOOK_ALIKE = str.maketrans({"o": "\u043e", "a": "\u0430", "e": "\u0435", "c": "\u0441", "p": "\u0440"})
CONCEPT_TAILS = {(), ("coding",), ("text",)}
MEDICATION_KINDS = {"MedicationStatement", "MedicationRequest", "MedicationDispense", "Medication"}
DATE = re.compile(r"\d{4}-\d{2}(-\d{2})?(T.*)?")
CODING_FIELDS = {"system", "code", "display"}
DATES = {"onsetDateTime", "abatementDateTime"}


def blocked_by_opioid(pid: str) -> bool:
    from smart_app.fhir.parse import patients_from_bundle

    (data,) = patients_from_bundle(load_sample(pid)).values()
    return any(f.code in BLOCKING for f in assess_data(data, as_of=SAMPLE_AS_OF).findings)


PATIENTS = sample_ids()
BLOCKED = {pid for pid in PATIENTS if blocked_by_opioid(pid)}


# --- which paths identify a record (a wrong type there makes it unreadable) ---------------------------------------

def _concept(tail: tuple) -> bool:
    """A CodeableConcept, its coding list, one coding, a coding's system/code/display, or its text."""
    return (tail in CONCEPT_TAILS or (len(tail) == 2 and tail[0] == "coding")
            or (len(tail) == 3 and tail[0] == "coding" and tail[2] in CODING_FIELDS))


def _free_text(path: tuple) -> bool:
    return path[0] in ("note", "dosage", "dosageInstruction") and (len(path) < 3 or path[2:] == ("text",))


def _medication_use(path: tuple, resource: dict) -> bool:
    head, tail = path[0], path[1:]
    if head == "medicationCodeableConcept":
        return _concept(tail)
    if head == "medicationReference":
        return tail in {(), ("reference",), ("display",)}
    uses_contained = str((resource.get("medicationReference") or {}).get("reference", "")).startswith("#")
    if head == "contained" and uses_contained:
        return len(tail) <= 1 or tail[1:] in {("resourceType",), ("id",)} or _medication(tail[1:])
    return head == "subject" and tail in {(), ("reference",)} or _free_text(path)


def _medication(path: tuple) -> bool:
    head, tail = path[0], path[1:]
    if head == "code":
        return _concept(tail)
    if head != "ingredient" or len(tail) <= 1:
        return head == "ingredient"
    item, rest = tail[1], tail[2:]
    return (item == "itemCodeableConcept" and _concept(rest)) or (item == "itemReference" and len(rest) <= 1)


def _condition(path: tuple) -> bool:
    head, tail = path[0], path[1:]
    if head in ("code", "clinicalStatus", "verificationStatus"):
        return _concept(tail)
    if head in ("onsetPeriod", "abatementPeriod"):
        return tail in {(), ("start",), ("end",)}
    return head in DATES or (head == "subject" and tail in {(), ("reference",)})


def identifies(resource: object, path: tuple, referenced: set[str]) -> bool:
    """Whether a wrong JSON type at `path` (inside an entry's resource) makes a record the app reads unreadable."""
    if not path or not isinstance(resource, dict):
        return True  # the resource itself
    kind = resource.get("resourceType")
    if path == ("resourceType",):
        return True
    if kind in ("MedicationStatement", "MedicationRequest", "MedicationDispense"):
        return _medication_use(path, resource)
    if kind == "Medication":
        return f"Medication/{resource.get('id')}" in referenced and _medication(path)
    return kind == "Condition" and _condition(path)


# --- mutations -------------------------------------------------------------------------------------------------

@dataclass
class Mutation:
    entry: int
    path: tuple  # inside the entry; ("resource", ...) for the resource
    kind: str
    unreadable: bool  # it makes a medication or condition record unreadable


def paths(node: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(paths(v, (*prefix, i)))
    return out


def get(node: object, path: tuple) -> object:
    for step in path:
        node = node[step]
    return node


def put(root: dict, path: tuple, value: object) -> dict:
    get(root, path[:-1])[path[-1]] = value
    return root


def _changes_type(pristine: dict, i: int, path: tuple, value: object) -> bool:
    """Whether `value` has another JSON type than the sample had there (a second retype may restore it)."""
    try:
        original = get(pristine["entry"][i], path)
    except (KeyError, IndexError, TypeError):
        return True
    return json_type(value) != json_type(original) or (isinstance(value, str) and len(value) > 20_000)


def _kind(entry: object) -> object:
    resource = entry.get("resource") if isinstance(entry, dict) else None
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    return kind if isinstance(kind, str) else None


def json_type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value),
                                                                                                   "number")


def references_in(bundle: dict) -> set[str]:
    return {str(v) for entry in bundle["entry"] for p in paths(entry) if p and p[-1] == "reference"
            for v in [get(entry, p)] if isinstance(v, str)}


@st.composite
def mutated(draw, pid: str, first: int = 0) -> tuple[dict, list[Mutation]]:
    """A sample Bundle with 1-3 structural mutations of its entries from `first` on, and what each did."""
    bundle, pristine = load_sample(pid), load_sample(pid)
    done = []
    for _ in range(draw(st.integers(1, 3))):
        entries = bundle["entry"]
        records = [j for j in range(first, len(entries)) if _kind(entries[j]) in MEDICATION_KINDS]
        anywhere = st.integers(first, len(entries) - 1)
        i = draw(st.sampled_from(records) if records and draw(st.integers(0, 3)) else anywhere)  # 3/4: a drug record
        path = draw(st.sampled_from(paths(entries[i])))
        kind, value = draw(mutation_for(get(entries[i], path), path))
        if kind == "skip":
            continue
        referenced = references_in(bundle)
        resource = entries[i].get("resource") if isinstance(entries[i], dict) else None
        inner = path[1:] if path[:1] == ("resource",) else None
        unreadable = kind in ("retype", "wrap", "huge") and (path == () or (
            inner is not None and identifies(resource, inner, referenced))) and _changes_type(pristine, i, path, value)
        if path:
            put(entries[i], path, value) if kind != "delete" else get(entries[i], path[:-1]).pop(path[-1])
        else:
            entries[i] = value
        done.append(Mutation(i, path, kind, unreadable))
    return bundle, done


@st.composite
def mutation_for(draw, node: object, path: tuple):
    """(kind, new value) for one node: another JSON type, deep list nesting, a huge string, invisible or
    look-alike characters, a reference in another valid form, or (for keys whose loss cannot hide anything)
    deletion."""
    kinds = ["retype", "wrap"]
    if isinstance(node, int | float) and not isinstance(node, bool):
        kinds += ["amount", "amount"]
    if isinstance(node, str) and DATE.fullmatch(node):
        kinds += ["year", "year"]
    if isinstance(node, str):
        kinds += ["huge", "perturb", "perturb"]
        if node.startswith(("Patient/", "Medication/")):
            kinds += ["reference", "reference"]
    if path and path[-1] in DELETABLE:
        kinds.append("delete")
    kind = draw(st.sampled_from(kinds))
    if kind == "retype":
        pool = [v for v in [*RETYPED, [node]] if json_type(v) != json_type(node)]
        return kind, copy.deepcopy(draw(st.sampled_from(pool)))
    if kind == "wrap":
        value = node
        for _ in range(draw(st.integers(1, 200))):  # deeper JSON: test_nothing_dropped (decoder limit)
            value = [value]
        return kind, value
    if kind == "huge":
        return kind, (node or "x") * (30_000 // max(1, len(node)) + 1)
    if kind == "perturb":
        return kind, draw(perturbed(node))
    if kind == "amount":  # negative, zero or absurd: an amount that cannot date a record
        return kind, draw(st.sampled_from([-node, 0, node * 10**6, -1e308, 10**400]))
    if kind == "year":  # a year as a JSON number (read as 1 January / 31 December, it would date the record)
        return kind, draw(st.sampled_from([int(node[:4]), int(node[:4]) - 1, 2000]))
    if kind == "reference":
        return kind, draw(st.sampled_from([f"{node}/_history/2", f"{node}/", f"{BASE}/{node}", f" {node} "]))
    return kind, None


# Keys whose removal leaves the record unreadable or changes nothing the rules read - never a silent loss of evidence
DELETABLE = {"resource", "resourceType", "status", "subject", "reference", "medicationCodeableConcept",
             "medicationReference", "contained", "id", "coding", "text", "display", "code", "system", "fullUrl",
             "search", "meta", "identifier", "intent", "category"}


@st.composite
def perturbed(draw, text: str) -> str:
    how = draw(st.sampled_from(["invisible", "look-alike", "upper", "full-width"]))
    if how == "invisible":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from(INVISIBLE)) + text[at:]
    if how == "look-alike":
        return text.translate(LOOK_ALIKE)
    if how == "upper":
        return text.upper()
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def check(decision: str | None, pid: str, mutations: list[Mutation], detail: object) -> None:
    """The property; `decision` None means the file as a whole was refused as unreadable (exit 2)."""
    if decision is None:
        return
    if pid in BLOCKED:
        assert decision not in SAFE, (pid, mutations, detail)
    if any(m.unreadable for m in lasting(mutations)):
        assert decision not in SAFE, (pid, mutations, detail)


def lasting(mutations: list[Mutation]) -> list[Mutation]:
    """The mutations no later one undid (a later change at the same node, or at a node holding it)."""
    return [m for k, m in enumerate(mutations)
            if not any(n.entry == m.entry and m.path[:len(n.path)] == n.path for n in mutations[k + 1:])]


def any_patient():
    """Half the time one an opioid keeps from eligible (where a wrong reading is unsafe), else any sample."""
    return st.one_of(st.sampled_from(sorted(BLOCKED)), st.sampled_from(PATIENTS))


# --- (a) through the command line --------------------------------------------------------------------------------

@settings(FUZZ, max_examples=FUZZ_CASES["cli"])
@given(data=st.data())
def test_mutated_sample_patients_never_crash_the_cli_nor_read_as_eligible_when_they_should_not(data, tmp_path_factory):
    pid = data.draw(any_patient())
    bundle, mutations = data.draw(mutated(pid))
    path = tmp_path_factory.mktemp("fuzz") / "case.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    out, err = _run_cli(str(path))
    code, lines = out
    if code == 2:
        assert err.count("\n") == 1 and str(path) in err, err
        check(None, pid, mutations, err)
        return
    assert code == 0, err
    (result,) = [json.loads(line) for line in lines]  # one patient per sample (its id may have been mutated)
    check(result["decision"], pid, mutations, [f["text"] for f in result["findings"]])


def _run_cli(path: str):
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["assess", path, "--as-of", SAMPLE_AS_OF.isoformat(), "--json"])
    return (code, out.getvalue().splitlines()), err.getvalue()


# --- (b) through the gateway, behind a hostile server -----------------------------------------------------------

SERVED = {"Patient", "Medication", "MedicationRequest", "MedicationStatement", "MedicationDispense", "Condition"}
PAGE_MUTATIONS = ["none", "mode", "wrap-resource", "wrap-entry", "entries-object", "retype-resource"]


@st.composite
def hostile_page(draw, resource_type: str, page: dict) -> tuple[dict, list[str]]:
    """One searchset page as a hostile server might send it, with its resources mutated as well."""
    page = copy.deepcopy(page)
    entries = page.get("entry") or []
    done = []
    whole = [i for i, e in enumerate(entries) if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    if whole:
        i = draw(st.sampled_from(whole))
        how = draw(st.sampled_from(PAGE_MUTATIONS))
        if how == "mode":
            entries[i]["search"] = {"mode": draw(st.sampled_from(["include", "outcome", "other", 5]))}
        elif how == "wrap-resource":
            entries[i]["resource"] = [entries[i]["resource"]]
        elif how == "wrap-entry":
            entries[i] = [entries[i]]
        elif how == "entries-object":
            page["entry"] = entries[i]
        elif how == "retype-resource":
            entries[i]["resource"]["resourceType"] = draw(st.sampled_from(["Observation", "Patient", "Medication"]))
        done.append(how)
    return page, done


@settings(FUZZ, max_examples=FUZZ_CASES["gateway"])
@given(data=st.data())
def test_a_hostile_server_sending_mutated_records_never_crashes_the_read_and_never_yields_eligible_wrongly(data):
    pid = data.draw(any_patient())
    bundle, mutations = data.draw(mutated(pid, first=1))  # entry 0, the Patient, is read by id and stays
    page_changes: list[str] = []
    target = data.draw(st.sampled_from(["MedicationRequest", "MedicationStatement", "MedicationDispense",
                                        "Condition"]))

    def mangle(resource_type: str, page: dict) -> dict:
        if resource_type != target:
            return page
        sent, done = data.draw(hostile_page(resource_type, page))
        page_changes.extend(done)
        return sent

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        _serve_mutated(rsps, bundle, mangle)
        gateway = FhirGateway(BASE, lambda: "token", sleep=lambda _s: None)
        record, problems = read_patient(gateway, pid)
        result = assess_data(record, as_of=SAMPLE_AS_OF, data_problems=problems)
    decision = result.decision.value
    check(decision, pid, mutations, [f.text for f in result.findings])
    if set(page_changes) & {"wrap-resource", "wrap-entry", "entries-object"} or "mode" in page_changes:
        assert decision not in SAFE, (page_changes, [f.text for f in result.findings])


def _serve_mutated(rsps, bundle: dict, mangle) -> None:
    """serve_patient for a Bundle whose non-Patient resources may be anything: unusable ones are sent as they are."""
    kept = [e for e in bundle["entry"] if isinstance(e, dict) and isinstance(e.get("resource"), dict)
            and isinstance(e["resource"].get("id"), str) and _kind(e) in SERVED
            and isinstance(e["resource"].get("medicationReference", {}), dict)
            and isinstance(e["resource"].get("medicationReference", {}).get("reference", ""), str)]
    broken = [e for e in bundle["entry"] if e not in kept]

    def with_broken(resource_type: str, page: dict) -> dict:
        if resource_type == "MedicationRequest" and broken:
            page = {**page, "entry": [*page["entry"], *broken]}
        return mangle(resource_type, page)

    serve_patient(rsps, {**bundle, "entry": kept}, with_broken)


def test_the_fuzz_oracle_knows_every_sample_patient_an_opioid_keeps_from_eligible():
    assert {"ldn-oxycodone-active", "ldn-tramadol-5-days", "ldn-fentanyl-patch-contained", "ldn-medication-reference",
            "ldn-dispense-only-hydrocodone", "ldn-opioid-status-unknown", "ldn-text-only-opioid", "ldn-no-dates",
            "ldn-methadone-oud", "ldn-buprenorphine-naloxone"} <= BLOCKED
    assert not BLOCKED & {"ldn-fibromyalgia", "ldn-opioid-long-ago", "ldn-opioid-entered-in-error"}
