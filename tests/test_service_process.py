"""The service as it runs in production: `python -m migrec serve` in a subprocess on a loopback port,
spoken to over HTTP, on the small two-domain world (tests/servicekit.py) in a SQLite store.

- the API tour (events, read-your-writes, warm / cross-domain / cold paths, an item posted by
  text recommendable at once, deletion, an update run) against the real server;
- kill -9 under concurrent writers: every acknowledged event survives, none is stored twice;
- a model swap (update, then rollbacks) under load: no failed request, every reader sees 1 -> 2 -> 1;
- deletion leaves no trace in any file of the data directory nor in the server's output.
"""
from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections import Counter

import httpx
import numpy as np
import pytest

import servicekit_proc as kit
from servicekit_proc import ServerProcess, Writer, ok


@pytest.fixture(scope="module")
def world(shared_data, tmp_path_factory):
    return kit.world_dir(shared_data, tmp_path_factory)


@pytest.fixture
def data_dir(world, tmp_path):
    return kit.fresh_copy(world, tmp_path / "svc")


@pytest.fixture
def server(data_dir, tmp_path):
    """A server on a private copy of the world (updates after 20 new events), with keys."""
    keys = kit.add_keys(kit.sqlite_url(data_dir))
    proc = ServerProcess(data_dir, tmp_path / "server.log", args=["--update-min-events", "20"]).start()
    proc.keys = keys
    yield proc
    proc.stop()


def test_api_tour_on_a_sqlite_server(server, data_dir):
    marker = f"tour-{uuid.uuid4().hex[:10]}"
    with server.client() as client:
        result = kit.api_tour(client, server.keys, kit.items_by_domain(data_dir), marker)
        assert ok(client.get("/healthz")) == {"status": "ok"}
        text = client.get("/metrics").text
        assert 'route="/users/{user_id}/recommendations",status="200"' in text
        assert f"migrec_model_version {2.0 if result['update']['decision'] == 'swapped' else 1.0}" in text
    server.stop()
    # a clean shutdown: uvicorn finishes, then re-raises the SIGTERM it caught (exit -15), no traceback
    assert server.proc.returncode in (0, -15), server.output()[-3000:]
    assert "Traceback" not in server.output()
    assert marker not in server.output()


# -- kill -9 ------------------------------------------------------------------------------------------
def test_kill_9_under_concurrent_writers_loses_no_acknowledged_event_and_stores_none_twice(data_dir, tmp_path):
    keys = kit.add_keys(kit.sqlite_url(data_dir))
    items = [i for part in kit.items_by_domain(data_dir).values() for i in part]

    def intact():                                   # the files as kill -9 left them
        db = sqlite3.connect(f"file:{data_dir / 'store.db'}?mode=ro", uri=True)
        try:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            db.close()

    sent = kit.kill_nine_and_replay(lambda: ServerProcess(data_dir, tmp_path / "server.log").start(), keys["write"],
                                    items, while_down=intact)
    db = sqlite3.connect(f"file:{data_dir / 'store.db'}?mode=ro", uri=True)
    try:
        n, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events "
                                 "WHERE event_id LIKE 'kill-%'").fetchone()
    finally:
        db.close()
    assert n == distinct == len(sent)


# -- hot swap under load ------------------------------------------------------------------------------
class Reader(threading.Thread):
    """Asks for recommendations without pause; keeps every status and the model version served."""

    def __init__(self, n: int, url: str, users: list[str]):
        super().__init__(name=f"reader-{n}", daemon=True)
        self.url, self.users = url, users
        self.statuses: Counter = Counter()
        self.versions: list[int] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120.0) as client:
            i = 0
            while not self.stop.is_set():
                user = self.users[i % len(self.users)]
                params = {"k": 10, **({"domain": "recent"} if i % 2 else {}),
                          **({"explain": "true"} if i % 5 == 0 else {})}
                i += 1
                try:
                    r = client.get(f"/users/{user}/recommendations", params=params)
                except httpx.TransportError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.statuses[r.status_code] += 1
                if r.status_code == 200:
                    self.versions.append(r.json()["model_version"])
                else:
                    self.failures.append(r.text[:300])

    def seen(self, version: int, after: int) -> bool:
        return version in self.versions[after:]


def changes(values: list[int]) -> list[int]:
    """The distinct runs of a sequence: [1, 1, 2, 2, 1] -> [1, 2, 1]."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


def wait_until(condition, bound: float = 300.0) -> None:
    end = time.monotonic() + bound
    while not condition() and time.monotonic() < end:
        time.sleep(0.05)


def test_hot_swap_and_rollback_under_load_fail_no_request(server, data_dir):
    domains = kit.items_by_domain(data_dir)
    admin = {"X-API-Key": server.keys["admin"]}
    rng = np.random.default_rng(1)
    users = [str(u) for u in rng.choice(np.arange(1, 300), 80, replace=False)]
    with server.client() as client:
        new = [{"user_id": u, "item_id": str(rng.choice(domains["recent"])), "timestamp": 3e9 + n}
               for n, u in enumerate(users * 3)]
        write = {"X-API-Key": server.keys["write"]}
        assert ok(client.post("/events", json={"events": new}, headers=write))["accepted"] == 240
        readers = [Reader(n, server.url, users[n::3] + [f"cold-{n}"]) for n in range(3)]
        writer = Writer(9, server.url, server.keys["write"], domains["recent"])
        for t in (*readers, writer):
            t.start()
        try:
            wait_until(lambda: all(len(r.versions) >= 3 for r in readers))
            record = ok(client.post("/admin/update", headers=admin))
            assert record["events"] >= 240 and record["from_version"] == 1 and record["to_version"] == 2
            marks = [len(r.versions) for r in readers]
            if record["decision"] == "rejected":
                # the candidate scored below version 1 on the held-back events (possible on so few): version 2
                # exists all the same, so make it live by hand; the swap under load is the same code path
                assert ok(client.post("/admin/rollback", json={"version": 2}, headers=admin)) == \
                    {"from_version": 1, "to_version": 2}
            else:
                assert record["decision"] == "swapped"
            assert ok(client.get("/admin/versions"))["live"] == 2
            wait_until(lambda: all(r.seen(2, m) for r, m in zip(readers, marks)))
            marks = [len(r.versions) for r in readers]
            assert ok(client.post("/admin/rollback", headers=admin)) == {"from_version": 2, "to_version": 1}
            wait_until(lambda: all(r.seen(1, m) and len(r.versions) >= m + 3 for r, m in zip(readers, marks)))
        finally:                       # the threads end with the test, whatever happens in it
            for t in (*readers, writer):
                t.stop.set()
            for t in (*readers, writer):
                t.join(timeout=120)
        assert ok(client.get("/admin/versions"))["live"] == 1
    assert [r.failures for r in readers] == [[], [], []]
    assert [set(r.statuses) for r in readers] == [{200}] * 3
    assert [changes(r.versions) for r in readers] == [[1, 2, 1]] * 3        # each swap seen once, never half
    assert writer.other == [] and writer.unacked == [] and len(writer.acked) > 0


# -- deletion leaves no trace ---------------------------------------------------------------------------
def test_deletion_leaves_no_trace_in_the_files_or_the_server_output(server, data_dir):
    marker = f"forget-{uuid.uuid4().hex[:12]}"
    control = f"keep-{uuid.uuid4().hex[:12]}"
    domains = kit.items_by_domain(data_dir)
    write = {"X-API-Key": server.keys["write"]}
    with server.client() as client:
        events = [{"user_id": marker, "item_id": i, "timestamp": 1.5e9 + n, "event_id": f"{marker}-{n}"}
                  for n, i in enumerate(domains["recent"][:30] + domains["classic"][:30])]
        ok(client.post("/events", json={"events": events[:40]}, headers=write))
        for e in events[40:]:
            ok(client.post("/events", json=e, headers=write))
        # the id travels through every read path (and an error path) before it is deleted
        assert ok(client.get(f"/users/{marker}/recommendations", params={"explain": "true"}))["path"] == "warm"
        assert ok(client.get(f"/users/{marker}/interests"))["events"] == 60
        assert len(ok(client.get(f"/users/{marker}/history"))["events"]) == 60
        assert client.get(f"/users/{marker}/recommendations", params={"domain": "nowhere"}).status_code == 422
        assert client.post("/events", json={"user_id": marker, "item_id": "nothing"}, headers=write).status_code == 422
        # a version trained on the user's events: its folder is searched too
        record = ok(client.post("/admin/update", headers={"X-API-Key": server.keys["admin"]}))
        assert record["events"] == 60 and record["to_version"] == 2
        gone = ok(client.delete(f"/users/{marker}", headers=write))
        assert gone == {"deleted_events": 60, "in_model_versions": [2]}       # version 2 learnt from them
        assert kit.files_containing(data_dir, marker.encode()) == []               # while the server runs
        ok(client.post("/events", json={"user_id": control, "item_id": domains["recent"][0]}, headers=write))
        assert ok(client.get(f"/users/{marker}/history"))["events"] == []
    server.stop()
    files = sorted(p.name for p in data_dir.rglob("*") if p.is_file())
    assert "store.db" in files and (data_dir / "versions" / "v0002" / "manifest.json").is_file()
    assert kit.files_containing(data_dir, marker.encode()) == []
    assert marker not in server.output()
    # the control: a user written after the deletion is in the store file, so the search can find ids
    holders = {p.name for p in kit.files_containing(data_dir, control.encode())}
    assert holders and holders <= {"store.db", "store.db-wal"}
