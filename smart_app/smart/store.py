"""Server-side sessions: the browser cookie holds only an opaque random id; tokens stay here.

`MemoryStore` (one process, thread-safe) and `RedisStore` (the `redis` package, JSON values with
SETEX) share one small interface over keys "<kind>:<id>" with a TTL each. `ServerSideSessionInterface`
plugs either into Flask so `flask.session` (the browser's session: its owner id and launch ids)
reads and writes the store. Written here: fhirclient keeps its state in the caller's hands and
Flask's default session is a signed (readable) cookie - neither fits.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Protocol

from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from smart_app.config import Settings
from smart_app.errors import SessionStoreUnavailable

log = logging.getLogger(__name__)
COOKIE_NAME = "ldn_sid"
_SID_BYTES = 32  # 256 bits; token_urlsafe gives 43 characters
_SID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")
SWEEP_PER_WRITE = 8  # expired entries removed per write (incremental: no full scan under the lock)
SWEEP_PER_COUNT = 256
COUNTED_KINDS = ("pending",)  # kinds whose live keys RedisStore indexes for count()


def new_session_id() -> str:
    """An opaque, unguessable id (256 random bits): session ids, launch ids, browser ids."""
    return secrets.token_urlsafe(_SID_BYTES)


def _kind(key: str) -> str:
    return key.split(":", 1)[0]


class SessionStore(Protocol):
    def get(self, key: str) -> dict | None: ...
    def set(self, key: str, data: dict, ttl: int) -> None: ...
    def touch(self, key: str, ttl: int) -> None: ...
    def take(self, key: str) -> dict | None: ...
    def delete(self, key: str) -> None: ...
    def count(self, kind: str) -> int: ...


class MemoryStore:
    """In-process store. Every write is O(1): one dict entry plus its place in a per-TTL FIFO queue,
    and up to SWEEP_PER_WRITE expired entries are removed from the queue heads. Values are copied
    through JSON, like Redis."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, str, int]] = {}  # key -> (expires, json, ttl)
        self._queues: dict[int, OrderedDict[str, None]] = {}  # ttl -> keys, oldest (first to expire) first
        self._counts: Counter[str] = Counter()

    def get(self, key: str) -> dict | None:
        with self._lock:
            raw = self._live(key, self._clock())
        return None if raw is None else json.loads(raw)

    def set(self, key: str, data: dict, ttl: int) -> None:
        raw = json.dumps(data)
        with self._lock:
            now = self._clock()
            self._sweep(now, SWEEP_PER_WRITE)
            self._put(key, raw, int(ttl), now)

    def touch(self, key: str, ttl: int) -> None:
        with self._lock:
            now = self._clock()
            raw = self._live(key, now)
            if raw is not None:
                self._put(key, raw, int(ttl), now)

    def take(self, key: str) -> dict | None:
        with self._lock:
            raw = self._live(key, self._clock())
            self._discard(key)
        return None if raw is None else json.loads(raw)

    def delete(self, key: str) -> None:
        with self._lock:
            self._discard(key)

    def count(self, kind: str) -> int:
        with self._lock:
            self._sweep(self._clock(), SWEEP_PER_COUNT)
            return self._counts[kind]

    def __len__(self) -> int:
        with self._lock:
            now = self._clock()
            return sum(1 for expires, _, _ in self._items.values() if expires > now)

    def _live(self, key: str, now: float) -> str | None:
        item = self._items.get(key)
        if item is None or item[0] <= now:
            self._discard(key)
            return None
        return item[1]

    def _put(self, key: str, raw: str, ttl: int, now: float) -> None:
        self._discard(key)
        self._items[key] = (now + ttl, raw, ttl)
        self._queues.setdefault(ttl, OrderedDict())[key] = None
        self._counts[_kind(key)] += 1

    def _discard(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            del self._queues[item[2]][key]
            self._counts[_kind(key)] -= 1

    def _sweep(self, now: float, limit: int) -> None:
        """Drop up to `limit` expired entries from the head of each TTL queue (same TTL: FIFO = expiry order)."""
        for queue in self._queues.values():
            for _ in range(limit):
                key = next(iter(queue), None)
                if key is None or self._items[key][0] > now:
                    break
                self._discard(key)


class RedisStore:
    """Redis-backed store: one key per entry, JSON value, TTL via SETEX. Counted kinds also keep a
    sorted-set index (member: key, score: expiry) so count() is ZREMRANGEBYSCORE + ZCARD.
    Every Redis failure becomes SessionStoreUnavailable (socket timeouts keep it within seconds)."""

    def __init__(self, url: str = "", *, client=None, prefix: str = "ldn:", timeout: float = 2.0):
        if client is None:
            import redis  # imported lazily: only deployments with a redis:// store need a server
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                          retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self._client = client
        self._prefix = prefix

    def get(self, key: str) -> dict | None:
        raw = self._call(self._client.get, self._prefix + key)
        return None if raw is None else json.loads(raw)

    def set(self, key: str, data: dict, ttl: int) -> None:
        def write(pipe):
            pipe.set(self._prefix + key, json.dumps(data), ex=int(ttl))
            if _kind(key) in COUNTED_KINDS:
                pipe.zadd(self._index(key), {key: time.time() + int(ttl)})
        self._pipeline(write)

    def touch(self, key: str, ttl: int) -> None:
        self._call(self._client.expire, self._prefix + key, int(ttl))

    def take(self, key: str) -> dict | None:
        def claim(pipe):
            pipe.get(self._prefix + key)
            self._delete(pipe, key)
        raw = self._pipeline(claim)[0]
        return None if raw is None else json.loads(raw)

    def delete(self, key: str) -> None:
        self._pipeline(lambda pipe: self._delete(pipe, key))

    def count(self, kind: str) -> int:
        def live(pipe):
            pipe.zremrangebyscore(self._index(kind), "-inf", time.time())
            pipe.zcard(self._index(kind))
        return int(self._pipeline(live)[1])

    def _index(self, key_or_kind: str) -> str:
        return f"{self._prefix}index:{_kind(key_or_kind)}"

    def _delete(self, pipe, key: str) -> None:
        pipe.delete(self._prefix + key)
        if _kind(key) in COUNTED_KINDS:
            pipe.zrem(self._index(key), key)

    def _pipeline(self, build: Callable) -> list:
        def run():
            pipe = self._client.pipeline(transaction=True)
            build(pipe)
            return pipe.execute()
        return self._call(run)

    @staticmethod
    def _call(method: Callable, *args):
        import redis

        try:
            return method(*args)
        except redis.RedisError as err:
            raise SessionStoreUnavailable(f"session store: {type(err).__name__}") from None


def make_store(settings: Settings) -> SessionStore:
    """SESSION_STORE: "memory" or a redis:// (rediss://, unix://) URL (checked by Settings)."""
    if settings.session_store == "memory":
        return MemoryStore()
    return RedisStore(settings.session_store, timeout=settings.session_store_timeout)


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
        self.store_error: SessionStoreUnavailable | None = None

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
    """Backs `flask.session` with a SessionStore; the cookie carries only the id.

    Idle timeout: the entry's TTL (SESSION_IDLE_MINUTES), renewed by each request that uses it.
    Absolute timeout: `created` + SESSION_MAX_HOURS, by the app's clock (`Settings.clock`).
    A store failure while opening is kept on the session (`store_error`) for a before_request hook to
    raise as a page; Flask would otherwise turn it into a bare 500."""

    def __init__(self, store: SessionStore):
        self.store = store

    def open_session(self, app, request) -> ServerSideSession:
        sid = request.cookies.get(COOKIE_NAME, "")
        if not _SID_PATTERN.match(sid):
            return ServerSideSession(new=True)  # never adopt an id the client chose (fixation)
        try:
            data = self.store.get("session:" + sid)
        except SessionStoreUnavailable as err:
            session = ServerSideSession(new=True)
            session.store_error = err
            return session
        settings: Settings = app.extensions["settings"]
        if data is None or data.get("created", 0) + settings.max_seconds <= settings.clock():
            return ServerSideSession(new=True)
        return ServerSideSession(data, sid=sid)

    def save_session(self, app, session: SessionMixin, response) -> None:
        if not isinstance(session, ServerSideSession) or session.store_error is not None:
            return
        try:
            self._save(app, session, response)
        except SessionStoreUnavailable:
            log.error("session store unavailable while saving a session")

    def _save(self, app, session: ServerSideSession, response) -> None:
        settings: Settings = app.extensions["settings"]
        secure = settings.https
        if session.accessed:
            response.vary.add("Cookie")
        if session.previous_sid:
            self.store.delete("session:" + session.previous_sid)
        if not session:
            if not session.new:
                self.store.delete("session:" + session.sid)
                response.delete_cookie(COOKIE_NAME, path="/", secure=secure, httponly=True,
                                       samesite="None" if secure else "Lax")
            return
        if not (session.modified or session.new):
            self.store.touch("session:" + session.sid, settings.idle_seconds)
            return
        session.setdefault("created", settings.clock())
        self.store.set("session:" + session.sid, dict(session), settings.idle_seconds)
        response.set_cookie(
            COOKIE_NAME, session.sid, path="/", httponly=True, secure=secure,
            samesite="None" if secure else "Lax",
            partitioned=secure,  # CHIPS: keeps the cookie usable inside the EHR's iframe
        )
