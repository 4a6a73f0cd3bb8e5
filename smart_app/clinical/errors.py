"""The clinical core's own errors (stdlib only); `services.core_errors` maps them to app errors."""

from __future__ import annotations


class ClinicalError(ValueError):
    """A value the clinical rules cannot accept; the message says which rule and why."""


class InvalidTitration(ClinicalError):
    """A titration request that breaks R1; `problems` lists every problem in plain words."""

    def __init__(self, problems: tuple[str, ...]):
        super().__init__(tuple(problems))
        self.problems = tuple(problems)

    def __str__(self) -> str:
        return " ".join(self.problems)


class InvalidWashout(ClinicalError):
    """A washout outside the 7-10 days R2 allows."""


class InvalidDate(ClinicalError):
    """A string that is not a FHIR date, dateTime or instant."""
