"""The live feed behind `GET /stream` (server-sent events): new events, model swaps, update runs.

Writers publish from any thread (request handlers run in a thread pool, the background loop in its
own); each subscriber is an asyncio queue on the server's event loop. A subscriber that follows one
user gets only that user's events, and a subscriber without one gets counts without user ids, so
the stream carries no other user's identity. Events written by another process (a second server on
the same store, `migrec import`) reach the feed through `catch_up`, which the background loop calls.
"""
from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field


@dataclass(eq=False)
class Subscriber:
    loop: asyncio.AbstractEventLoop
    user: str | None = None
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=256))


class Feed:
    def __init__(self):
        self._lock = threading.Lock()
        self._subscribers: set[Subscriber] = set()
        self.published_seq = 0          # newest event seq published (catch_up reads past it)

    def subscribe(self, user: str | None = None) -> Subscriber:
        sub = Subscriber(asyncio.get_running_loop(), user)
        with self._lock:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    def __len__(self) -> int:
        return len(self._subscribers)

    def _send(self, sub: Subscriber, kind: str, payload: dict) -> None:
        def put():
            if sub.queue.full():                 # a stalled reader loses the oldest message, not the server
                sub.queue.get_nowait()
            sub.queue.put_nowait((kind, payload))
        try:
            sub.loop.call_soon_threadsafe(put)
        except RuntimeError:                     # its loop has closed: the reader is gone
            self.unsubscribe(sub)

    def publish(self, kind: str, payload: dict) -> None:
        """A message every subscriber gets (model swaps, update runs)."""
        with self._lock:
            subs = list(self._subscribers)
        for sub in subs:
            self._send(sub, kind, payload)

    def events(self, rows: list[dict], last_seq: int) -> None:
        """Stored events (dicts with user_id, item_id, domain, timestamp): each user's own to their
        followers, the count to everyone else."""
        with self._lock:
            self.published_seq = max(self.published_seq, int(last_seq))
            subs = list(self._subscribers)
        if not rows:
            return
        for sub in subs:
            if sub.user is None:
                self._send(sub, "events", {"accepted": len(rows), "last_seq": int(last_seq)})
                continue
            mine = [{"item_id": r["item_id"], "domain": r["domain"], "timestamp": r["timestamp"]}
                    for r in rows if r["user_id"] == sub.user]
            if mine:
                self._send(sub, "events", {"user_id": sub.user, "events": mine, "last_seq": int(last_seq)})

    def catch_up(self, store) -> None:
        """Publish events stored since the last publish by anyone (cheap when nothing is new)."""
        if not self._subscribers:
            self.published_seq = store.last_seq()
            return
        last = store.last_seq()
        if last <= self.published_seq:
            return
        frame = store.events(after_seq=self.published_seq, upto_seq=last)
        self.events(frame.to_dict("records"), last)


def sse(kind: str, payload: dict) -> str:
    """One server-sent-events message."""
    return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"
