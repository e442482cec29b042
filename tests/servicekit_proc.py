"""Real service processes for the integration tests: `python -m migrec serve` in a subprocess on a
free loopback port (its output captured to a file), the small world of tests/servicekit.py built
once per test run, fresh PostgreSQL databases, and one tour of the API that the SQLite and the
PostgreSQL servers both have to pass."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import servicekit

REPO = Path(__file__).resolve().parents[1]
OLD = 1.5e9                      # an event time well outside the cold path's trending window
POSTGRES_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
_WORLD: dict = {}


# -- the small world ----------------------------------------------------------------------------------
def world_dir(shared_data: Path, tmp_path_factory) -> Path:
    """The imported SQLite data directory of the small world, built once per test run (the model
    trains in a few seconds); tests work on copies (`fresh_copy`)."""
    if "sqlite" not in _WORLD:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _WORLD["sqlite"] = servicekit.imported_data_dir(shared_data, tmp_path_factory.mktemp("proc-world"))
        finally:
            torch.set_num_threads(before)
    return _WORLD["sqlite"]


def fresh_copy(world: Path, target: Path) -> Path:
    return servicekit.copy_data_dir(world, target)


def import_world(shared_data: Path, root: Path, store_url: str) -> Path:
    """The small world imported into the store at `store_url` (any engine), exactly as
    `servicekit.imported_data_dir` does for SQLite; returns the data directory (model versions)."""
    import torch

    from migrec.serving import Store
    from migrec.serving.bootstrap import import_dataset

    data = servicekit.two_domain_data(shared_data, root / "dataset")
    data_dir = root / "service"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    store = Store.open(store_url)
    try:
        import_dataset(store, data_dir / "versions", "parquet", str(data), model="interest-text+id", blend=True,
                       encoder=servicekit.ENCODER, params=servicekit.PARAMS, cache_dir=None, progress=False)
    finally:
        store.close()
        torch.set_num_threads(before)
    return data_dir


def items_by_domain(data_dir: Path) -> dict[str, list[str]]:
    """The first version's items (all known to its model) by domain, in catalogue order."""
    cat = pd.read_parquet(Path(data_dir) / "versions" / "v0001" / "catalogue.parquet")
    return {d: [str(i) for i in part["item_id"]] for d, part in cat.groupby("domain", sort=True)}


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(Path(data_dir) / 'store.db').resolve()}"


def add_keys(store_url: str) -> dict[str, str]:
    """A write key and an admin key in the store (as `migrec keys create` makes them)."""
    from migrec.serving import Store

    store = Store.open(store_url)
    try:
        tag = uuid.uuid4().hex[:8]
        return {"write": store.create_key(f"writer-{tag}", "write"), "admin": store.create_key(f"ops-{tag}", "admin")}
    finally:
        store.close()


# -- server processes --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m migrec serve` on a free loopback port; stdout and stderr go to `log`.

    `start()` waits for GET /readyz; `kill()` is kill -9; `stop()` is a clean SIGTERM shutdown."""

    READY_WITHIN = 240.0          # seconds a start may take on a loaded CI machine before the test errors

    def __init__(self, data_dir: Path, log: Path, store: str | None = None, args=()):
        self.data_dir, self.log, self.store, self.args = Path(data_dir), Path(log), store, list(args)
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "migrec", "serve", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
               "--port", str(self.port), *self.args]
        return cmd + (["--store", self.store] if self.store else [])

    def start(self) -> "ServerProcess":
        for _ in range(3):                               # another process may take the free port first
            self.port = free_port()
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
            with open(self.log, "ab") as out:
                self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                             stdin=subprocess.DEVNULL)
            if self._wait_ready():
                return self
            if "address already in use" not in self.output().lower():
                break
        raise RuntimeError(f"the server did not become ready (exit {self.proc.poll()}):\n{self.output()[-4000:]}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.READY_WITHIN
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self.kill()
        return False

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), kill -9 if it does not end."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 120.0), **kw)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# -- PostgreSQL ----------------------------------------------------------------------------------------
def postgres_admin_url() -> str:
    return os.environ.get("MIGREC_TEST_POSTGRES_URL", POSTGRES_DEFAULT)


def postgres_or_skip() -> str:
    """The admin URL when a server answers; otherwise skip, or fail under CI=true (there the
    PostgreSQL tests are required)."""
    import psycopg

    url = postgres_admin_url()
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        message = f"no PostgreSQL server at {url} (set MIGREC_TEST_POSTGRES_URL): {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


@contextmanager
def postgres_database(admin_url: str, template: str | None = None):
    """A fresh database on the server of `admin_url` (through an autocommit connection), empty or a
    copy of the database at URL `template`; yields its URL and drops it afterwards (WITH FORCE: a
    killed server may leave sessions behind)."""
    import psycopg
    from psycopg import sql

    name = f"migrec_t_{uuid.uuid4().hex[:12]}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template.rsplit("/", 1)[1]))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(create)
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# -- the API tour --------------------------------------------------------------------------------------
def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, (response.request.method, str(response.request.url), response.status_code,
                                             response.text[:2000])
    return response.json()


def api_tour(client: httpx.Client, keys: dict, domains: dict[str, list[str]], marker: str) -> dict:
    """The service's promises over HTTP, whatever the store: idempotent events with read-your-writes,
    the warm / cross-domain / cold paths, an item posted by text recommendable at once, deletion,
    and one update run. `marker` is a user id unique to the test (deleted at the end). Returns
    what the caller may check further (the update record, the posted item)."""
    write, admin = {"X-API-Key": keys["write"]}, {"X-API-Key": keys["admin"]}
    # every event before the update is older than the service's trending window (7 days), so the
    # cold path ranks by all-time counts and the deletion check below can see the counts move
    classic, recent = domains["classic"], domains["recent"]

    # warm path and read-your-writes: the consumed item leaves the list at once
    before = ok(client.get("/users/1/recommendations", params={"k": 10}))
    assert before["path"] == "warm" and len(before["items"]) == 10 and before["model_version"] == 1
    top = before["items"][0]["item_id"]
    ack = ok(client.post("/events", json={"user_id": "1", "item_id": top, "timestamp": OLD, "event_id": "tour-1"},
                         headers=write))
    assert (ack["accepted"], ack["duplicates"]) == (1, 0)
    after = ok(client.get("/users/1/recommendations", params={"k": 10}))
    assert after["as_of_seq"] >= ack["last_seq"]
    assert top not in [i["item_id"] for i in after["items"]]
    history = ok(client.get("/users/1/history", params={"limit": 100000}))["events"]
    assert history[-1]["seq"] == ack["last_seq"] and history[-1]["item_id"] == top
    again = ok(client.post("/events", json={"user_id": "1", "item_id": top, "timestamp": OLD, "event_id": "tour-1"},
                           headers=write))
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    assert len(ok(client.get("/users/1/history", params={"limit": 100000}))["events"]) == len(history)
    bad = client.post("/events", json={"events": [{"user_id": marker, "item_id": recent[0]},
                                                  {"user_id": marker, "item_id": "no-such-item"}]}, headers=write)
    assert bad.status_code == 422 and "no-such-item" in bad.text
    assert ok(client.get(f"/users/{marker}/history"))["events"] == []        # all or nothing
    assert client.post("/events", json={"user_id": "1", "item_id": top}).status_code == 401

    # cold: popularity in the asked domain, highest first
    cold = ok(client.get(f"/users/{marker}/recommendations", params={"domain": "recent", "k": 10}))
    assert cold["path"] == "cold" and cold["as_of_seq"] >= ack["last_seq"]
    counts = [i["score"] for i in cold["items"]]
    assert len(counts) == 10 and counts == sorted(counts, reverse=True) and counts[0] > 0
    assert {i["item_id"] for i in cold["items"]} <= set(recent)

    # cross-domain: known only in "classic", asking for "recent"
    events = [{"user_id": marker, "item_id": i, "timestamp": 1000.0 + n, "event_id": f"{marker}-c{n}"}
              for n, i in enumerate(classic[:15])]
    assert ok(client.post("/events", json={"events": events}, headers=write))["accepted"] == 15
    cross = ok(client.get(f"/users/{marker}/recommendations", params={"domain": "recent", "k": 10}))
    assert cross["path"] == "cross-domain"
    assert {i["item_id"] for i in cross["items"]} <= set(recent)
    assert [i["item_id"] for i in cross["items"]] != [i["item_id"] for i in cold["items"]]
    warm = ok(client.get(f"/users/{marker}/recommendations", params={"domain": "classic", "k": 10}))
    assert warm["path"] == "warm" and not {i["item_id"] for i in warm["items"]} & set(classic[:15])
    explained = ok(client.get(f"/users/{marker}/recommendations", params={"domain": "classic", "k": 3,
                                                                          "explain": "true"}))
    assert all(i["because"] for i in explained["items"])
    assert ok(client.get(f"/users/{marker}/interests"))["events"] == 15

    # an item posted by text: stored, similar to its donor, recommendable without retraining
    donor = ok(client.get(f"/items/{classic[3]}"))
    posted = {"item_id": f"{marker}-item", "domain": "classic", "title": donor["title"] + " II",
              "fields": {k: v for k, v in donor["fields"].items() if isinstance(v, str)}}
    created = ok(client.post("/items", json=posted, headers=write), 201)
    assert created["cold"] is True and created["title"] == posted["title"]
    assert client.post("/items", json=posted, headers=write).status_code == 409
    similar = ok(client.get(f"/items/{classic[3]}/similar", params={"k": 5}))["items"]
    assert posted["item_id"] in [i["item_id"] for i in similar]
    everything = ok(client.get("/users/2/recommendations", params={"k": len(classic), "domain": "classic"}))["items"]
    assert posted["item_id"] in [i["item_id"] for i in everything]
    assert all(np.isfinite(i["score"]) for i in everything)
    consumed = {"user_id": "7", "item_id": posted["item_id"], "timestamp": OLD}
    assert ok(client.post("/events", json=consumed, headers=write))["accepted"] == 1
    assert ok(client.get(f"/items/{posted['item_id']}"))["events"] == 1

    # deletion: the events go, and the user's share of popularity with them
    many = [{"user_id": marker, "item_id": recent[40], "timestamp": 1e9 + n} for n in range(400)]
    assert ok(client.post("/events", json={"events": many}, headers=write))["accepted"] == 400
    cold_now = ok(client.get("/users/someone-new/recommendations", params={"domain": "recent", "k": 3}))
    assert cold_now["items"][0]["item_id"] == recent[40]
    assert client.delete(f"/users/{marker}").status_code == 401
    assert ok(client.delete(f"/users/{marker}", headers=write)) == {"deleted_events": 415, "in_model_versions": []}
    assert ok(client.get(f"/users/{marker}/history"))["events"] == []
    assert client.delete(f"/users/{marker}", headers=write).status_code == 404
    assert ok(client.get(f"/users/{marker}/recommendations", params={"domain": "recent"}))["path"] == "cold"
    # the cold list may be cached for `popular_ttl` seconds; deletion clears the cache
    cold_after = ok(client.get("/users/someone-new/recommendations", params={"domain": "recent", "k": 3}))
    assert cold_after["items"][0]["item_id"] != recent[40]

    # one update run on the events since version 1 (the server runs with --update-min-events 20)
    rng = np.random.default_rng(0)
    users = [str(u) for u in rng.choice(np.arange(1, 200), 60, replace=False)]
    fresh = [{"user_id": u, "item_id": str(rng.choice(recent)), "timestamp": 3e9 + n} for n, u in enumerate(users * 3)]
    ok(client.post("/events", json={"events": fresh}, headers=write))
    assert client.post("/admin/update", headers=write).status_code == 403
    record = ok(client.post("/admin/update", headers=admin))
    assert record["from_version"] == 1 and record["to_version"] == 2
    assert record["decision"] in ("swapped", "rejected")
    assert record["metrics_before"]["cases"] == record["metrics_after"]["cases"] > 0
    versions = ok(client.get("/admin/versions"))
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    assert versions["live"] == (2 if record["decision"] == "swapped" else 1)
    served = ok(client.get("/users/1/recommendations"))
    assert served["model_version"] == versions["live"]
    # the posted item survives a swap: the new version serves it too
    assert ok(client.get(f"/items/{posted['item_id']}"))["item_id"] == posted["item_id"]
    return {"update": record, "item": posted["item_id"]}


# -- kill -9 under concurrent writers ----------------------------------------------------------------------
class Writer(threading.Thread):
    """Posts its own events (single ones and batches of 2-25; every event with a unique event_id and
    a unique timestamp) until told to stop or the server goes away. `acked` holds the batches answered
    200 with all events accepted; `unacked` the ones without an answer (in flight at a kill, refused
    after); `other` any other answer (a failure of its own)."""

    def __init__(self, n: int, url: str, key: str, items: list[str]):
        super().__init__(name=f"writer-{n}", daemon=True)
        self.n, self.url, self.key, self.items = n, url, key, items
        self.rng = np.random.default_rng(n)
        self.acked: list[list[dict]] = []
        self.unacked: list[list[dict]] = []
        self.other: list[tuple[int, str]] = []
        self.stop = threading.Event()
        self.count = 0

    def batch(self) -> list[dict]:
        size = 1 if self.count % 3 == 0 else int(self.rng.integers(2, 26))
        out = []
        for _ in range(size):
            c = self.count
            self.count += 1
            out.append({"user_id": f"kill-{self.n}-{c % 3}", "item_id": str(self.rng.choice(self.items)),
                        "timestamp": 1.6e9 + self.n * 1e6 + c, "event_id": f"kill-{self.n}-{c}"})
        return out

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60.0, headers={"X-API-Key": self.key}) as client:
            while not self.stop.is_set():
                events = self.batch()
                body = events[0] if len(events) == 1 else {"events": events}
                try:
                    r = client.post("/events", json=body)
                except httpx.TransportError:
                    self.unacked.append(events)
                    return                              # the server is gone
                if r.status_code == 200 and (r.json()["accepted"], r.json()["duplicates"]) == (len(events), 0):
                    self.acked.append(events)
                else:
                    self.unacked.append(events)
                    self.other.append((r.status_code, r.text[:300]))


def kill_nine_and_replay(start, key: str, items: list[str], writers: int = 4, batches: int = 150,
                         while_down=None) -> list[dict]:
    """Start a server (`start()` -> a ready ServerProcess), let `writers` threads post events until
    `batches` batches are acknowledged (about 3 s on two cores), kill -9 the server mid-stream,
    call `while_down()`, start it again on the same store and send every unanswered batch again
    with the same event ids (and the answered ones too). Asserts that each event sent is stored
    exactly once, every acknowledged one among them, and returns the events sent."""
    server = start()
    try:
        threads = [Writer(n, server.url, key, items) for n in range(writers)]
        for t in threads:
            t.start()
        bound = time.monotonic() + 300               # a count decides when to kill; the bound only stops a hang
        while (sum(len(t.acked) for t in threads) < batches and time.monotonic() < bound
               and all(t.is_alive() for t in threads)):
            time.sleep(0.02)
        server.kill()                                   # os.kill(pid, SIGKILL) while the writers post
    finally:
        server.kill()
    assert server.proc.returncode == -signal.SIGKILL
    for t in threads:
        t.join(timeout=120)                             # each ends at its first request without an answer
    assert not any(t.is_alive() for t in threads)
    assert [t.other for t in threads] == [[]] * writers
    acked = [e for t in threads for b in t.acked for e in b]
    unacked = [b for t in threads for b in t.unacked]
    assert len(acked) >= batches and len(unacked) >= writers    # each writer's last request got no answer
    if while_down is not None:
        while_down()

    server = start()
    try:
        with server.client(headers={"X-API-Key": key}) as client:
            for events in unacked:                      # retried with the same ids: stored once, however
                r = ok(client.post("/events", json={"events": events}))   # far they got before the kill
                assert r["accepted"] + r["duplicates"] == len(events)
            for t in threads:
                for events in t.acked:                  # the acknowledged ones are all known already
                    r = ok(client.post("/events", json={"events": events}))
                    assert (r["accepted"], r["duplicates"]) == (0, len(events))
            sent = acked + [e for b in unacked for e in b]
            stored = Counter()
            for user in sorted({e["user_id"] for e in sent}):
                history = ok(client.get(f"/users/{user}/history", params={"limit": 100000}))["events"]
                stored.update((user, h["item_id"], h["timestamp"]) for h in history)
    finally:
        server.stop()
    # timestamps are unique per event: each sent event (every acknowledged one among them) is stored
    # exactly once, and nothing else is
    expected = Counter((e["user_id"], e["item_id"], e["timestamp"]) for e in sent)
    assert max(expected.values()) == 1
    assert stored == expected
    return sent


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and needle in p.read_bytes())
