"""One launch, one context: pending and completed launches kept server-side, bound to one browser.

Store keys: "pending:<state>" (authorize request sent, TTL LAUNCH_TTL_SECONDS, capped by
MAX_PENDING_LAUNCHES), "launch:<launch id>" (iss, patient, tokens, user, csrf; idle TTL renewed on
use, absolute SESSION_MAX_HOURS) and "order:<launch id>:<order key>" (a confirmation page). Every
record names its `owner`, the browser id held in that browser's server-side session, so a launch id
copied into another browser finds nothing.
"""

from __future__ import annotations

from smart_app.config import Settings
from smart_app.errors import TooManyLaunches
from smart_app.smart.store import SessionStore, new_session_id


class Launches:
    """The launches of one browser (`owner`) in `store`."""

    def __init__(self, store: SessionStore, owner: str | None, settings: Settings):
        self.store, self.owner, self.settings, self.clock = store, owner, settings, settings.clock

    # --- pending (between /launch and /callback) ---------------------------------------------

    def add_pending(self, state: str, pending: dict) -> None:
        """Remember an authorize request; over MAX_PENDING_LAUNCHES nothing is stored."""
        if self.store.count("pending") >= self.settings.max_pending_launches:
            raise TooManyLaunches("pending launch cap reached")
        ttl = self.settings.launch_ttl_seconds
        self.store.set("pending:" + state, {**pending, "owner": self.owner, "created": self.clock()}, ttl)

    def claim_pending(self, state: str | None) -> dict | None:
        """The pending launch for `state`, removed (single use); None if unknown, expired or another
        browser's (which stays untouched: another browser cannot spend this browser's state)."""
        if not state or not self.owner:
            return None
        key = "pending:" + state
        seen = self.store.get(key)
        if seen is None or seen.get("owner") != self.owner:
            return None
        pending = self.store.take(key)  # None here: a concurrent callback of the same browser took it
        ttl = self.settings.launch_ttl_seconds
        return pending if pending is not None and pending["created"] + ttl > self.clock() else None

    # --- completed launches ------------------------------------------------------------------

    def create(self, context: dict) -> str:
        """Store a completed launch under a fresh unguessable id; return the id."""
        launch_id = new_session_id()
        now = self.clock()
        self.store.set("launch:" + launch_id, {**context, "owner": self.owner, "created": now,
                                               "csrf": new_session_id()}, self.settings.idle_seconds)
        return launch_id

    def get(self, launch_id: str | None) -> dict | None:
        """This browser's live launch `launch_id` (its idle timer renewed), or None."""
        if not launch_id or not self.owner:
            return None
        record = self.store.get("launch:" + launch_id)
        if record is None or record.get("owner") != self.owner:
            return None
        if record["created"] + self.settings.max_seconds <= self.clock():
            self.store.delete("launch:" + launch_id)
            return None
        self.store.touch("launch:" + launch_id, self.settings.idle_seconds)
        return record

    def update(self, launch_id: str, record: dict) -> None:
        """Write back a launch record (refreshed tokens)."""
        self.store.set("launch:" + launch_id, record, self.settings.idle_seconds)

    def delete(self, launch_id: str) -> None:
        self.store.delete("launch:" + launch_id)

    # --- confirmation pages ------------------------------------------------------------------

    def save_order(self, launch_id: str, key: str, summary: dict) -> None:
        self.store.set(f"order:{launch_id}:{key}", summary, int(self.settings.max_seconds))

    def order(self, launch_id: str, key: str) -> dict | None:
        return self.store.get(f"order:{launch_id}:{key}")
