"""Trusting CDS Clients (CDS Hooks 2.0): the EHR's signed JWT, verified against its configured JWKS.

Each call carries `Authorization: Bearer <JWT>`. The token's `iss` must be one of LDN_CDS_CLIENTS
(`iss|jwks_url` pairs); its signature must verify with a key of that client's JWKS (PyJWT's
PyJWKClient, fetched with a timeout and cached); `aud` must be the URL of the endpoint called;
`exp`, `iat` and `jti` are required; a `jti` seen before (until its `exp`) is a replay.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jwt

from smart_app.config import Settings

# Asymmetric only: the spec forbids `none` and shared-secret (HMAC) algorithms; ES384/RS384 recommended.
ALGORITHMS = ("ES384", "RS384", "ES256", "ES512", "RS256", "RS512", "PS256", "PS384", "PS512")
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]
LEEWAY = 30  # seconds of clock skew allowed on exp / iat
MAX_LIFETIME = 600  # a token valid for longer than this is refused: its jti would have to be kept too long
MAX_SEEN = 100_000  # bounded replay memory; when full of unexpired ids, new tokens are refused
JWKS_CACHE_SECONDS = 300


class Untrusted(Exception):
    """The call is not from a configured CDS Client (HTTP 401). The message names why, never the token."""


class Overloaded(Exception):
    """A token id cannot be recorded (memory full of unexpired ids, or Redis down): HTTP 503, never a pass."""


def parse_clients(raw: str | Mapping[str, str]) -> dict[str, str]:
    """LDN_CDS_CLIENTS: `iss|jwks_url` pairs separated by commas -> {iss: jwks_url}."""
    if isinstance(raw, Mapping):
        return dict(raw)
    clients: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (raw or "").split(","))):
        iss, sep, jwks_url = (p.strip() for p in item.partition("|"))
        if not sep or not iss or not jwks_url.startswith(("https://", "http://")):
            raise ValueError(f"CDS_CLIENTS entry {item!r} is not 'iss|https://.../jwks.json'")
        clients[iss] = jwks_url
    return clients


class SeenTokens:
    """`iss jti` -> expiry, kept until the token expires; bounded; one lock."""

    def __init__(self, limit: int = MAX_SEEN, clock: Callable[[], float] = time.time):
        self._limit, self._clock = limit, clock
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}  # insertion order ~ expiry order (lifetimes are capped)

    def first_use(self, key: str, expires_at: float) -> bool:
        with self._lock:
            now = self._clock()
            self._drop_expired(now)
            if key in self._seen:
                return False
            if len(self._seen) >= self._limit:
                raise Overloaded("too many recent CDS calls to remember their token ids")
            self._seen[key] = expires_at + LEEWAY
            return True

    def _drop_expired(self, now: float) -> None:
        while self._seen:
            key = next(iter(self._seen))
            if self._seen[key] > now:
                return
            del self._seen[key]

    def __len__(self) -> int:
        return len(self._seen)


class RedisSeenTokens:
    """Seen token ids shared by every instance (SESSION_STORE=redis://...): one atomic SET NX EX per token."""

    def __init__(self, url: str, *, timeout: float = 2.0, clock: Callable[[], float] = time.time):
        import redis  # only deployments with a redis:// store need it

        self._errors = redis.RedisError
        self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._clock = clock

    def first_use(self, key: str, expires_at: float) -> bool:
        name = "ldn:cds-jti:" + hashlib.sha256(key.encode()).hexdigest()
        ttl = max(1, int(expires_at + LEEWAY - self._clock()) + 1)
        try:
            return bool(self._client.set(name, "1", nx=True, ex=ttl))
        except self._errors as err:
            raise Overloaded(f"the replay store is unavailable ({type(err).__name__})") from None


def make_seen(settings: Settings) -> SeenTokens | RedisSeenTokens:
    """Where seen token ids live: with the sessions (Redis, shared by instances) or in this process."""
    if settings.session_store != "memory":
        return RedisSeenTokens(settings.session_store, timeout=settings.session_store_timeout)
    return SeenTokens()  # token times are wall time: PyJWT checks exp/iat against it


@dataclass
class ClientVerifier:
    """Verifies CDS Client JWTs for one app: configured clients, their JWKS clients, seen token ids."""

    clients: dict[str, str]
    timeout: float = 5.0
    seen: SeenTokens | RedisSeenTokens | None = None
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._jwks = {iss: jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=JWKS_CACHE_SECONDS,
                                           timeout=self.timeout) for iss, url in self.clients.items()}

    def _seen(self) -> SeenTokens | RedisSeenTokens:
        if self.seen is None:
            self.seen = SeenTokens(clock=self.clock)
        return self.seen

    def verify(self, authorization: str | None, audience: str) -> dict:
        """The claims of a trusted, fresh, first-use token for `audience`; else Untrusted."""
        token = _bearer(authorization)
        iss, alg = _unverified_issuer_and_alg(token)
        if iss not in self._jwks:
            raise Untrusted("the token's issuer is not a configured CDS client")
        try:
            key = self._jwks[iss].get_signing_key_from_jwt(token).key
            claims = jwt.decode(token, key, algorithms=[alg], audience=audience, issuer=iss, leeway=LEEWAY,
                                options={"require": REQUIRED_CLAIMS})
        except jwt.PyJWKClientError:
            raise Untrusted("no key of the client's JWKS matches the token (or the JWKS is unreachable)") from None
        except jwt.PyJWTError as err:
            raise Untrusted(f"token rejected: {type(err).__name__}") from None
        if float(claims["exp"]) > self.clock() + MAX_LIFETIME + LEEWAY:
            raise Untrusted(f"token lifetime exceeds {MAX_LIFETIME} s")
        if not self._seen().first_use(f"{iss} {claims['jti']}", float(claims["exp"])):
            raise Untrusted("token replayed (jti already used)")
        return claims


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Untrusted("no bearer token")
    return token.strip()


def _unverified_issuer_and_alg(token: str) -> tuple[str, str]:
    """Only to choose the client and key; nothing is trusted until `jwt.decode` verifies it."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise Untrusted("not a JWT") from None
    if header.get("alg") not in ALGORITHMS:
        raise Untrusted("token algorithm not accepted (asymmetric algorithms only)")
    return str(claims.get("iss", "")), header["alg"]
