"""Per-issuer documents (SMART configuration, CapabilityStatement) cached app-wide: TTL, Cache-Control, ETag.

One `DocumentCache` per app (`app.extensions["fhir.documents"]`), shared by every request's
gateway and by discovery, so a new gateway per request does not refetch `/metadata` (300-700 KB).
A document is fresh for the server's `Cache-Control: max-age` (capped by the TTL) or else the
TTL; `no-store` is never kept, `no-cache` is revalidated every time. A stale one with an ETag is
revalidated with If-None-Match (a 304 keeps it). One fetch per URL at a time: concurrent first
requests wait for it. Written here rather than with CacheControl/requests-cache because those
cache HTTP bodies by URL for every request of a session (patient data included), while this
keeps only the parsed documents we name, so nothing is parsed twice.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import requests

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.I)


@dataclass(frozen=True)
class _Cached:
    body: dict
    etag: str | None
    fresh_until: float


class DocumentCache:
    """Parsed JSON documents by URL, shared by every request of the app (thread-safe, bounded)."""

    def __init__(self, ttl: float = 3600.0, max_entries: int = 64, clock: Callable[[], float] = time.monotonic):
        self.ttl, self.max_entries, self._clock = ttl, max_entries, clock
        self._entries: OrderedDict[str, _Cached] = OrderedDict()
        self._fetching: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, url: str, fetch: Callable[[dict], requests.Response],
            parse: Callable[[requests.Response], dict], *, refresh: bool = False) -> dict:
        """The document at `url`: from the cache while fresh, else `fetch(extra_headers)` and `parse`.

        `refresh` revalidates even a fresh document (a readiness probe must reach the server).
        Failures are not cached: the next request tries again.
        """
        cached = self._peek(url)
        if cached and not refresh and cached.fresh_until > self._clock():
            return cached.body
        with self._fetch_lock(url):
            cached = self._peek(url)
            if cached and not refresh and cached.fresh_until > self._clock():
                return cached.body  # another request fetched it while we waited
            response = fetch({"If-None-Match": cached.etag} if cached and cached.etag else {})
            body = cached.body if cached and response.status_code == 304 else parse(response)
            self._keep(url, body, response)
            return body

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _peek(self, url: str) -> _Cached | None:
        with self._lock:
            return self._entries.get(url)

    def _fetch_lock(self, url: str) -> threading.Lock:
        with self._lock:
            if url not in self._fetching and len(self._fetching) >= self.max_entries:
                self._fetching = {u: lock for u, lock in self._fetching.items() if lock.locked()}
            return self._fetching.setdefault(url, threading.Lock())

    def _keep(self, url: str, body: dict, response: requests.Response) -> None:
        lifetime = self._lifetime(response.headers.get("Cache-Control") or "")
        with self._lock:
            if lifetime is None:
                self._entries.pop(url, None)
                return
            self._entries[url] = _Cached(body, response.headers.get("ETag"), self._clock() + lifetime)
            self._entries.move_to_end(url)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def _lifetime(self, cache_control: str) -> float | None:
        """Seconds a response stays fresh; None when it must not be kept."""
        directives = cache_control.lower()
        if "no-store" in directives:
            return None
        if "no-cache" in directives:
            return 0.0
        found = _MAX_AGE.search(directives)
        return min(float(found.group(1)), self.ttl) if found else self.ttl
