"""Settings: one frozen object built from the LDN_* environment and checked at start-up."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

from .clinical.rules.r2_opioid_washout import WASHOUT_DEFAULT, WASHOUT_RANGE

PREFIX = "LDN_"
SHARED_STORES = ("redis://", "rediss://", "unix://")
KEY_ALGS = ("RS384", "ES384")
ZERO_ALLOWED = frozenset({"FHIR_RETRIES", "TOKEN_REFRESH_MARGIN_SECONDS", "FHIR_RETRY_MAX_WAIT"})


class SettingsError(ValueError):
    """A setting that cannot be used; the message names its environment variable."""


@dataclass(frozen=True)
class Settings:
    """Every LDN_* setting, typed and validated; `clock` is the app's wall clock (tests freeze it)."""

    allowed_issuers: tuple[str, ...] = ()  # FHIR base URLs (iss) we accept launches from
    client_id: str = "ldn-app"
    client_secret: str = ""  # set -> confidential client, client_secret_basic
    private_key_file: str = ""  # set -> confidential client, private_key_jwt
    private_key_alg: str = "RS384"  # RS384 or ES384
    key_id: str = "ldn-app-key-1"
    public_base_url: str = "http://127.0.0.1:8000"  # where browsers reach the app; redirect URI = + /callback
    session_store: str = "memory"  # "memory" or a redis:// URL
    session_store_timeout: float = 2.0  # seconds: Redis connect/read timeout (an outage is a page, not a hang)
    session_idle_minutes: float = 30.0  # a session or launch unused this long ends
    session_max_hours: float = 8.0  # a session or launch ends this long after it began, used or not
    max_pending_launches: int = 1000  # launches sent to /authorize and not yet back; over it /launch answers 503
    token_origins: tuple[tuple[str, str], ...] = ()  # (iss, origin): token endpoint origins besides the issuer's
    secret_key: str = ""  # random per process when empty (fine for one instance)
    frame_ancestors: str = "'self'"  # CSP frame-ancestors: the EHR origins that may embed the app
    washout_days: int = WASHOUT_DEFAULT  # R2: opioid-free days before the first dose (7-10)
    fhir_connect_timeout: float = 5.0
    fhir_read_timeout: float = 30.0
    fhir_retries: int = 3
    log_level: str = "INFO"
    open_servers: tuple[str, ...] = ()  # FHIR bases with no authorization (test data only): patient search
    open_requester: str = ""  # open servers: the Practitioner reference signing orders; unset -> signing disabled
    default_iss: str = ""  # standalone launch: the FHIR base used when /launch gets no iss
    launch_ttl_seconds: int = 600  # how long a pending launch (state + PKCE verifier) stays usable
    token_refresh_margin_seconds: float = 60.0  # refresh the access token this long before it expires
    fhir_read_deadline: float = 20.0  # seconds for all FHIR reads of one page, retries included
    fhir_metadata_ttl: float = 3600.0  # seconds discovery and the CapabilityStatement stay cached per issuer
    fhir_page_size: int = 1000  # _count asked for on every search (servers cap it themselves)
    fhir_max_entries: int = 20_000  # search entries one patient record may hold; more is cannot-determine
    fhir_max_page_entries: int = 10_000  # entries one search page may hold; more is cannot-determine
    fhir_max_workers: int = 5  # concurrent searches when reading a patient record
    fhir_retry_max_wait: float = 10.0  # cap (seconds) on a Retry-After / backoff wait between GET retries
    cds_clients: str = ""  # CDS Hooks clients (EHRs) allowed to call /cds-services: comma-separated iss|jwks_url
    max_content_length: int = 64 * 1024  # bytes per request body: a larger form is refused with 413
    clock: Callable[[], float] = field(default=time.time, compare=False, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None,
                 clock: Callable[[], float] | None = None) -> Settings:
        """Defaults < LDN_* variables < `overrides` (keys without the prefix); SettingsError naming the variable."""
        env = os.environ if environ is None else environ
        raw: dict[str, object] = {name: env[PREFIX + name] for name in setting_names() if PREFIX + name in env}
        raw.update({k: v for k, v in (overrides or {}).items() if k in setting_names()})
        values: dict[str, Any] = {f.name: _parse(f.name.upper(), raw[f.name.upper()], f.default)
                                  for f in fields(cls) if f.name.upper() in raw}
        settings = cls(**values, clock=clock or time.time)
        settings.check()
        return settings

    def check(self) -> None:
        """The checks that relate several settings, or need more than a type."""
        _check_url("PUBLIC_BASE_URL", self.public_base_url)
        for name in ("ALLOWED_ISSUERS", "OPEN_SERVERS"):
            for url in getattr(self, name.lower()):
                _check_url(name, url)
        if self.default_iss:
            _check_url("DEFAULT_ISS", self.default_iss)
        for iss, origin in self.token_origins:
            _check_url("TOKEN_ORIGINS", iss)
            _check_url("TOKEN_ORIGINS", origin)
        if self.session_store != "memory" and not self.session_store.startswith(SHARED_STORES):
            raise _error("SESSION_STORE", self.session_store, "use memory or a redis://, rediss:// or unix:// URL")
        if self.private_key_alg not in KEY_ALGS:
            raise _error("PRIVATE_KEY_ALG", self.private_key_alg, f"use {' or '.join(KEY_ALGS)}")
        low, high = WASHOUT_RANGE
        if not low <= self.washout_days <= high:
            raise _error("WASHOUT_DAYS", self.washout_days, f"the washout is {low} to {high} days (R2)")
        if not isinstance(logging.getLevelName(self.log_level.upper()), int):
            raise _error("LOG_LEVEL", self.log_level, "use DEBUG, INFO, WARNING or ERROR")

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock()).astimezone()

    def today(self) -> date:
        return self.now().date()

    @property
    def https(self) -> bool:
        return self.public_base_url.startswith("https://")

    @property
    def idle_seconds(self) -> int:
        return int(self.session_idle_minutes * 60)

    @property
    def max_seconds(self) -> float:
        return self.session_max_hours * 3600

    @property
    def http_timeout(self) -> tuple[float, float]:
        """(connect, read) seconds for every outbound request."""
        return self.fhir_connect_timeout, self.fhir_read_timeout

    def frozen_at(self, day: date) -> Settings:
        """The same settings with a clock stopped at noon of `day` (tests, demos of a fixed date)."""
        noon = datetime(day.year, day.month, day.day, 12).timestamp()
        return replace(self, clock=lambda: noon)


def setting_names() -> frozenset[str]:
    """The LDN_ names (without the prefix) of every setting."""
    return frozenset(f.name.upper() for f in fields(Settings) if f.name != "clock")


def _parse(name: str, value: object, default: object) -> Any:
    """`value` (a string from the environment, or an already typed override) as the type of `default`."""
    if isinstance(default, tuple):
        return _pairs(name, value) if name == "TOKEN_ORIGINS" else _list(value)
    if isinstance(default, str):
        return str(value).strip()
    whole = isinstance(default, int)
    try:
        number: float = int(str(value).strip()) if whole else float(str(value).strip())
    except ValueError:
        raise _error(name, value, "not an integer" if whole else "not a number") from None
    if number < 0 or (number == 0 and name not in ZERO_ALLOWED):
        raise _error(name, value, "must be 0 or more" if name in ZERO_ALLOWED else "must be more than 0")
    return number


def _list(value: object) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple | set | frozenset):
        return ()
    return tuple(dict.fromkeys(str(item).strip().rstrip("/") for item in items if str(item).strip()))


def _pairs(name: str, value: object) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _list(value):
        issuer, sep, origin = item.partition("|")
        if not sep:
            raise _error(name, item, "each entry is iss|origin")
        pairs.append((issuer.strip().rstrip("/"), origin.strip()))
    return tuple(pairs)


def _check_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise _error(name, url, "not an http(s) URL")


def _error(name: str, value: object, why: str) -> SettingsError:
    shown = "(empty)" if value == "" else repr(value if len(str(value)) <= 80 else str(value)[:77] + "...")
    return SettingsError(f"{PREFIX}{name}={shown}: {why}")
