"""Code sets loaded from the ValueSets in fhir_profiles/valuesets (the single source of truth).

Matching: exact (system, code); for ICD-10-CM and ATC a listed code also covers every code
that extends it (both systems are prefix-hierarchical: `K50` covers `K50.90`). Names are
matched on word boundaries against the ValueSets' `match-term` designations.
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources

CANONICAL_BASE = "https://fhir.ldn-app.org"
MATCH_TERM_SYSTEM = CANONICAL_BASE + "/CodeSystem/ldn-designation-use"
MATCH_TERM_CODE = "match-term"

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
NDC = "http://hl7.org/fhir/sid/ndc"
UCUM = "http://unitsofmeasure.org"

# Other spellings of the same code systems seen in EHR data (OIDs, old URIs).
SYSTEM_ALIASES = {
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "http://www.nlm.nih.gov/research/umls/rxnorm/": RXNORM,
    "urn:oid:2.16.840.1.113883.6.73": ATC,
    "http://www.whocc.no/atc/": ATC,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "http://snomed.info/sct/": SNOMED,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10-cm/": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.69": NDC,
}
PREFIX_SYSTEMS = frozenset({ICD10CM, ATC})


def normalize_system(system: str | None) -> str | None:
    if not system:
        return None
    return SYSTEM_ALIASES.get(system, system)


def normalize_code(system: str | None, code: str) -> str:
    code = code.strip()
    if system in PREFIX_SYSTEMS:
        return code.replace(".", "").upper()
    return code


# Letters from other scripts that look like Latin ones (Unicode TR39 confusables.txt, the lower-case
# Cyrillic/Greek/Latin-extended look-alikes of the letters drug names use). A small explicit table: the
# core is stdlib-only, and the PyPI options do not fit - confusable_homoglyphs detects look-alikes but
# has no folding function; anyascii/unidecode transliterate by sound (Cyrillic "с" -> "s", not "c").
CONFUSABLES = str.maketrans({
    "а": "a", "в": "b", "с": "c", "ԁ": "d", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j",
    "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "ԛ": "q", "ѕ": "s", "т": "t", "у": "y", "х": "x",
    "ԝ": "w", "ь": "b", "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g",
    "ℓ": "l", "\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2010": "-", "\u2011": "-", "\u2012": "-",
    "\u2013": "-", "\u2212": "-",
})
MAX_NAME_CHARS = 20_000  # longer text is not matched (parse reports it unreadable first)


def normalize_name(text: str) -> str:
    """Text as people type it -> one matchable form.

    Unicode NFKC (full-width, ligatures, styled letters), format characters removed (zero-width
    space/joiners, soft hyphen, bidi marks: category Cf), case folded, look-alike letters of other
    scripts folded to Latin, runs of space folded to one space.
    """
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf").casefold().translate(CONFUSABLES)
    return " " + " ".join(text.split()) + " "


NAME_CACHE_SIZE = 20_000
MEMO_SIZE = 20_000


class LruCache(OrderedDict):
    """A dict that keeps only the `size` most recently used entries (thread-safe get and set)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            try:
                self.move_to_end(key)
            except KeyError:
                return default
            return super().__getitem__(key)

    def __setitem__(self, key, value) -> None:
        with self._lock:
            super().__setitem__(key, value)
            self.move_to_end(key)
            if len(self) > self.size:
                self.popitem(last=False)


@dataclass(frozen=True)
class Match:
    valueset: str  # ValueSet id, e.g. "opioids"
    display: str  # the concept's display (ingredient / condition name)
    via: str  # "RxNorm 7804" or "name 'oxycontin'"


class Terminology:
    """Lookups over a fixed collection of ValueSets."""

    def __init__(self, valuesets: Iterable[dict]):
        self.valuesets: dict[str, dict] = {}
        self._codes: dict[tuple[str | None, str], list[tuple[str, str]]] = {}
        terms: dict[str, list[tuple[str, str]]] = {}
        for vs in valuesets:
            self.valuesets[vs["id"]] = vs
            for include in vs.get("compose", {}).get("include", []):
                system = normalize_system(include.get("system")) or ""
                for concept in include.get("concept", []):
                    display = concept.get("display") or concept["code"]
                    key = (system, normalize_code(system, concept["code"]))
                    self._codes.setdefault(key, []).append((vs["id"], display))
                    for term in _match_terms(concept):
                        terms.setdefault(term, []).append((vs["id"], display))
        self._terms = terms
        alternatives = sorted(terms, key=len, reverse=True)
        pattern = "|".join(re.escape(t) for t in alternatives) or "(?!)"
        self._term_re = re.compile(r"(?<![a-z0-9])(" + pattern + r")(?![a-z0-9])")
        self._prefix_lengths = sorted({len(code) for (system, code) in self._codes if system in PREFIX_SYSTEMS},
                                      reverse=True)
        self._name_cache = LruCache(NAME_CACHE_SIZE)
        self.memo = LruCache(MEMO_SIZE)  # per-drug / per-condition classification results

    def code_matches(self, system: str | None, code: str | None) -> tuple[Match, ...]:
        """ValueSets that contain this code (prefix rule for ICD-10-CM and ATC)."""
        system = normalize_system(system)
        if not system or not code:
            return ()
        code = normalize_code(system, code)
        label = f"{_system_label(system)} {code}"
        if system in PREFIX_SYSTEMS:  # only prefixes as long as a listed code: linear in the code's length
            keys = [(system, code[:n]) for n in self._prefix_lengths if n <= len(code)]
        else:
            keys = [(system, code)]
        return tuple(Match(vs, display, label) for key in keys for vs, display in self._codes.get(key, ()))

    def name_matches(self, text: str | None) -> tuple[Match, ...]:
        """ValueSets whose match terms occur as whole words in this name."""
        if not text or len(text) > MAX_NAME_CHARS:
            return ()
        cached = self._name_cache.get(text)
        if cached is None:
            norm = normalize_name(text)
            found: list[Match] = []
            for m in self._term_re.finditer(norm):
                term = m.group(1)
                found.extend(Match(vs, display, f"name '{term}'") for vs, display in self._terms[term])
            cached = self._name_cache[text] = tuple(found)
        return cached


def _match_terms(concept: dict) -> list[str]:
    out = []
    for d in concept.get("designation", []):
        use = d.get("use") or {}
        if use.get("system") == MATCH_TERM_SYSTEM and use.get("code") == MATCH_TERM_CODE and d.get("value"):
            out.append(normalize_name(d["value"]).strip())
    return out


def _system_label(system: str) -> str:
    return {RXNORM: "RxNorm", ATC: "ATC", SNOMED: "SNOMED CT", ICD10CM: "ICD-10-CM", NDC: "NDC"}.get(
        system, system
    )


def load_valuesets() -> list[dict]:
    """Every ValueSet JSON shipped in fhir_profiles/valuesets."""
    folder = resources.files("fhir_profiles").joinpath("valuesets")
    out = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("ValueSet-") and entry.name.endswith(".json"):
            out.append(json.loads(entry.read_text(encoding="utf-8")))
    return out


@cache
def default_terminology() -> Terminology:
    return Terminology(load_valuesets())
