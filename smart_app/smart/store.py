"""Server-side sessions: the browser cookie holds only an opaque random id; tokens stay here.

`MemoryStore` (one process, thread-safe, TTL) and `RedisStore` (the `redis` package, JSON values
with SETEX) share one small interface; `ServerSideSessionInterface` plugs either into Flask so
`flask.session` reads and writes the store. Written here: fhirclient keeps its state in the
caller's hands and Flask's default session is a signed (readable) cookie - neither fits.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

COOKIE_NAME = "ldn_sid"
_SID_BYTES = 32  # 256 bits; token_urlsafe gives 43 characters
_SID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def new_session_id() -> str:
    """An opaque, unguessable session id (256 random bits)."""
    return secrets.token_urlsafe(_SID_BYTES)


class SessionStore(Protocol):
    def get(self, sid: str) -> dict | None: ...
    def set(self, sid: str, data: dict, ttl: int) -> None: ...
    def delete(self, sid: str) -> None: ...


class MemoryStore:
    """In-process store with per-entry expiry. Values are copied through JSON, like Redis."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, str]] = {}

    def get(self, sid: str) -> dict | None:
        with self._lock:
            item = self._items.get(sid)
            if item is None:
                return None
            expires, raw = item
            if expires <= self._clock():
                del self._items[sid]
                return None
        return json.loads(raw)

    def set(self, sid: str, data: dict, ttl: int) -> None:
        raw = json.dumps(data)
        with self._lock:
            now = self._clock()
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
            self._items[sid] = (now + ttl, raw)

    def delete(self, sid: str) -> None:
        with self._lock:
            self._items.pop(sid, None)

    def __len__(self) -> int:
        with self._lock:
            now = self._clock()
            return sum(1 for expires, _ in self._items.values() if expires > now)


class RedisStore:
    """Redis-backed store: one key per session, JSON value, TTL via SETEX."""

    def __init__(self, url: str | None = None, *, client=None, prefix: str = "ldn:session:"):
        if client is None:
            import redis  # imported lazily: only deployments with a redis:// store need a server

            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._client = client
        self._prefix = prefix

    def get(self, sid: str) -> dict | None:
        raw = self._client.get(self._prefix + sid)
        return None if raw is None else json.loads(raw)

    def set(self, sid: str, data: dict, ttl: int) -> None:
        self._client.setex(self._prefix + sid, int(ttl), json.dumps(data))

    def delete(self, sid: str) -> None:
        self._client.delete(self._prefix + sid)


def make_store(config: Mapping) -> SessionStore:
    """SESSION_STORE: "memory" or a redis:// (rediss://, unix://) URL."""
    setting = str(config.get("SESSION_STORE") or "memory")
    if setting == "memory":
        return MemoryStore()
    if setting.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(setting)
    raise ValueError("SESSION_STORE must be 'memory' or a redis:// URL")


class ServerSideSession(CallbackDict, SessionMixin):
    """`flask.session` for one request: a dict plus its opaque id."""

    def __init__(self, initial: dict | None = None, sid: str | None = None, new: bool = False):
        def on_update(session: ServerSideSession) -> None:
            session.modified = True
            session.accessed = True

        super().__init__(initial, on_update)
        self.sid = sid or new_session_id()
        self.new = new
        self.modified = False
        self.accessed = False
        self.previous_sid: str | None = None

    def __getitem__(self, key):
        self.accessed = True
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.accessed = True
        return super().get(key, default)

    def regenerate(self) -> None:
        """Move the data to a fresh id (call after login: defeats session fixation)."""
        if self.previous_sid is None and not self.new:
            self.previous_sid = self.sid
        self.sid = new_session_id()
        self.modified = True


class ServerSideSessionInterface(SessionInterface):
    """Backs `flask.session` with a SessionStore; the cookie carries only the id."""

    def __init__(self, store: SessionStore):
        self.store = store

    def open_session(self, app, request) -> ServerSideSession:
        sid = request.cookies.get(COOKIE_NAME, "")
        if _SID_PATTERN.match(sid):
            data = self.store.get(sid)
            if data is not None:
                return ServerSideSession(data, sid=sid)
        # unknown or malformed id: never adopt an id the client chose (fixation)
        return ServerSideSession(new=True)

    def save_session(self, app, session: ServerSideSession, response) -> None:
        secure = _served_over_https(app.config)
        if session.accessed:
            response.vary.add("Cookie")
        if session.previous_sid:
            self.store.delete(session.previous_sid)
        if not session:
            if not session.new:
                self.store.delete(session.sid)
                response.delete_cookie(COOKIE_NAME, path="/", secure=secure, httponly=True,
                                       samesite="None" if secure else "Lax")
            return
        if not (session.modified or session.new):
            return
        self.store.set(session.sid, dict(session), int(app.config.get("SESSION_TTL_SECONDS", 8 * 3600)))
        response.set_cookie(
            COOKIE_NAME, session.sid, path="/", httponly=True, secure=secure,
            samesite="None" if secure else "Lax",
            partitioned=secure,  # CHIPS: keeps the cookie usable inside the EHR's iframe
        )


def _served_over_https(config: Mapping) -> bool:
    return str(config.get("PUBLIC_BASE_URL", "")).startswith("https://")
