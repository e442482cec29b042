"""The service store, run against SQLite (a temp file) and PostgreSQL (a fresh database per test).

PostgreSQL: $MIGREC_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test) must accept
CREATE DATABASE; a server that does not answer skips those tests, or fails them under CI=true.
"""
from __future__ import annotations

import math
import os
import threading
import uuid

import numpy as np
import pytest

from migrec.serving import store as store_module
from migrec.serving.store import MIGRATIONS, Store, StoreError

PG_URL = os.environ.get("MIGREC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
DAY = 86400.0


def _pg_admin():
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        message = f"PostgreSQL at {PG_URL} does not answer: {err}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'store.db'}"
        return
    from sqlalchemy.engine import make_url

    admin, name = _pg_admin(), f"migrec_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def store(url):
    with Store.open(url) as s:
        yield s


def ev(user, item, ts, domain="books", event="click", event_id=None):
    return {"user_id": user, "item_id": item, "domain": domain, "event": event, "timestamp": ts, "event_id": event_id}


def test_schema_created_reopened_and_migrated_once(url, monkeypatch):
    with Store.open(url) as s:
        assert s.kind in ("sqlite", "postgresql") and s.schema_version() == len(MIGRATIONS) == 1
        s.add_events([ev("u1", "a", 1.0)])
    calls = []
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS + [lambda conn: calls.append(conn)])
    for _ in range(2):
        with Store.open(url) as s:
            assert s.schema_version() == 2 and s.history("u1") == [(1, "a", "books", "click", 1.0)]
    assert len(calls) == 1                       # applied on the first reopen only
    with Store.open(url) as s:
        s.set_meta("schema_version", 7)
    with pytest.raises(StoreError, match="schema version 7, newer than this code knows"):
        Store.open(url)


def test_open_rejects_unusable_urls(tmp_path):
    for bad in ("sqlite://", "sqlite:///:memory:", "mysql://u@h/db", "not a url"):
        with pytest.raises(StoreError, match="store url"):
            Store.open(bad)


def test_add_events_skips_repeated_event_ids(store):
    out = store.add_events([ev("u1", "a", 10.0, event_id="e1"), ev("u1", "b", 20.0, event_id="e2"),
                            ev("u1", "a", 30.0, event_id="e1"), ev("u2", "c", 40.0)])
    assert out == {"accepted": 3, "duplicates": 1, "last_seq": 3, "seqs": [1, 2, None, 3]}
    again = store.add_events([ev("u1", "a", 10.0, event_id="e2"), ev("u3", "d", 50.0, event_id="e3"),
                              ev("u2", "c", 40.0)])              # no event_id: never a duplicate
    assert again == {"accepted": 2, "duplicates": 1, "last_seq": 5, "seqs": [None, 4, 5]}
    assert store.add_events([ev("u1", "a", 1.0, event_id="e1")]) == {
        "accepted": 0, "duplicates": 1, "last_seq": 5, "seqs": [None]}
    assert store.counts() == {"users": 3, "events": 5, "items": 4, "domains": 1, "last_seq": 5}
    assert store.item_counts_by_day("a") == [(0, 1)]               # the duplicate did not count


def test_a_bad_row_stores_nothing(store):
    store.add_events([ev("u0", "z", 5.0)])
    with pytest.raises(StoreError, match="event 2: field 'timestamp'"):
        store.add_events([ev("u1", "a", 10.0), ev("u1", "b", 20.0), ev("u1", "c", float("nan"))])
    assert store.last_seq() == 1 and not store.has_user("u1") and store.popular() == [("z", 1)]


@pytest.mark.parametrize("field,value", [
    ("user_id", None), ("user_id", ""), ("user_id", "  "), ("user_id", 42), ("item_id", None), ("item_id", ""),
    ("domain", ""), ("event", 3), ("timestamp", None), ("timestamp", float("nan")), ("timestamp", float("inf")),
    ("timestamp", "1700000000"), ("timestamp", True), ("event_id", ""), ("event_id", 7)])
def test_bad_event_names_row_and_field(store, field, value):
    bad = ev("u1", "b", 2.0)
    bad[field] = value
    with pytest.raises(StoreError, match=f"event 1: field '{field}'") as err:
        store.add_events([ev("u1", "a", 1.0), bad])
    assert (err.value.field, err.value.index) == (field, 1) and store.last_seq() == 0


def test_missing_domain_and_event_take_defaults_and_non_lists_fail(store):
    store.add_events([{"user_id": "u", "item_id": "i", "timestamp": 3}])
    assert store.history("u") == [(1, "i", "default", "interaction", 3.0)]
    with pytest.raises(StoreError, match="list of event objects"):
        store.add_events(ev("u", "i", 1.0))
    with pytest.raises(StoreError, match="event 0: expected an object"):
        store.add_events(["u,i,1"])


def test_history_is_in_seq_order_newest_limit(store):
    store.add_events([ev("u1", f"i{j}", 1000.0 - j) for j in range(5)] + [ev("u2", "x", 1.0)])
    store.add_events([ev("u1", "late", 1.0, domain="films", event="view")])
    full = store.history("u1")
    assert [h[0] for h in full] == [1, 2, 3, 4, 5, 7]            # arrival order, not timestamp order
    assert full[-1] == (7, "late", "films", "view", 1.0) and all(isinstance(h, tuple) for h in full)
    assert store.history("u1", limit=2) == full[-2:] and store.history("u1", limit=100) == full
    assert store.history("nobody") == [] and not store.has_user("nobody") and store.has_user("u2")


def test_events_and_histories_upto_seq(store):
    store.add_events([ev("u1", "a", 10.0), ev("u2", "b", 20.0), ev("u1", "c", 5.0), ev("u3", "d", 40.0)])
    frame = store.events(after_seq=1, upto_seq=3)
    assert list(frame.columns) == ["user_id", "item_id", "domain", "event", "timestamp", "seq"]
    assert frame["seq"].tolist() == [2, 3] and frame["item_id"].tolist() == ["b", "c"]
    assert frame["timestamp"].dtype == np.float64 and len(store.events()) == 4 and store.events(after_seq=4).empty
    hist = store.histories(upto_seq=3)
    assert sorted(hist.users()) == ["u1", "u2"] and list(hist["u1"]) == ["a", "c"]
    assert hist.times("u1").tolist() == [10.0, 5.0]
    some = store.histories(users=["u3", "u1", "ghost"])
    assert sorted(some.users()) == ["u1", "u3"] and list(some["u3"]) == ["d"]
    assert len(store.histories(upto_seq=0)) == 0


def test_popular_by_domain_day_and_exclude(store):
    rows = ([ev(f"u{j}", "a", 0.5 * DAY) for j in range(3)] + [ev(f"u{j}", "b", 2.5 * DAY) for j in range(2)]
            + [ev("u9", "b", 3.2 * DAY), ev("u9", "b", 3.7 * DAY)]
            + [ev(f"u{j}", "m", 3.0 * DAY, domain="films") for j in range(2)])
    store.add_events(rows)
    assert store.popular() == [("b", 4), ("a", 3), ("m", 2)]
    assert store.popular("books", k=1) == [("b", 4)] and store.popular("films") == [("m", 2)]
    assert store.popular(since_day=3) == [("b", 2), ("m", 2)]          # ties by item id
    assert store.popular("books", k=2, exclude=["b"]) == [("a", 3)] and store.popular("music") == []
    assert store.item_counts_by_day("b") == [(2, 2), (3, 2)] and store.item_counts_by_day("nope") == []
    assert store.users() == ["u0", "u1", "u2", "u9"] and store.users("u", limit=2) == ["u0", "u1"]
    assert store.users("u9") == ["u9"] and store.users("U") == []


def test_delete_user_removes_events_and_their_counts(store):
    store.add_events([ev("keep", "a", 1.0), ev("gone", "a", 2.0), ev("gone", "b", DAY + 1), ev("gone", "b", DAY + 2),
                      ev("keep", "c", 3.0, domain="films")])
    assert store.popular() == [("a", 2), ("b", 2), ("c", 1)]
    assert store.delete_user("gone") == 3 and store.delete_user("gone") == 0
    assert store.popular() == [("a", 1), ("c", 1)] and store.item_counts_by_day("b") == []
    assert store.counts() == {"users": 1, "events": 2, "items": 2, "domains": 2, "last_seq": 5}
    assert store.history("gone") == [] and store.histories().users() == ["keep"] and store.users() == ["keep"]
    assert store.add_events([ev("new", "a", 9.0)])["seqs"] == [6]     # seqs are never reused
    with pytest.raises(StoreError, match="'user_id'"):
        store.delete_user("")


def test_deleted_user_leaves_no_bytes_in_sqlite_files(tmp_path):
    path = tmp_path / "store.db"
    with Store.open(f"sqlite:///{path}") as s:
        for b in range(30):                      # interleaved, so the user's rows share pages with others
            s.add_events([ev(user, f"item-{b}-{j}", b * 100.0 + j, event_id=f"{user}-ev-{b}-{j}")
                          for j in range(20) for user in ("user-zq81x", "user-kp47w", f"other-{b}")])
        files = lambda: b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("store.db"))
        assert b"user-zq81x" in files() and b"user-kp47w" in files()
        assert s.delete_user("user-zq81x") == 600
        assert b"user-zq81x" not in files() and b"user-kp47w" in files()   # the test can tell
        assert s.history("user-kp47w")[0][1] == "item-0-0"
    assert b"user-zq81x" not in files()


def test_items_add_get_replace_search(store):
    vec = np.array([0.5, -1.0, 2.0], dtype=np.float64)
    assert store.add_items([
        {"item_id": "b1", "domain": "books", "title": "Dune", "fields": {"author": "Herbert"}, "vector": vec,
         "encoder": "hashing:3", "source": "api"},
        {"item_id": "f1", "domain": "films", "title": "Dune_Part 100%", "fields": {}, "vector": None, "encoder": None,
         "source": "catalogue"}]) == 2
    got = store.get_item("b1")
    assert got["fields"] == {"author": "Herbert"} and got["vector"].dtype == np.float32
    assert got["vector"].tolist() == [0.5, -1.0, 2.0] and got["encoder"] == "hashing:3" and got["source"] == "api"
    assert store.get_item("f1")["vector"] is None and store.get_item("zz") is None
    with pytest.raises(StoreError, match="'b1' already exists") as err:
        store.add_items([{"item_id": "n1", "domain": "books", "title": "x", "source": "api"},
                         {"item_id": "b1", "domain": "books", "title": "x", "source": "api"}])
    assert err.value.field == "item_id" and store.get_item("n1") is None
    store.add_items([{"item_id": "b1", "domain": "books", "title": "Dune Messiah", "source": "catalogue"}],
                    replace=True)
    assert store.get_item("b1")["title"] == "Dune Messiah" and store.get_item("b1")["vector"] is None
    assert [i["item_id"] for i in store.items()] == ["b1", "f1"] and store.items(source="api") == []
    assert [i["item_id"] for i in store.search_items("DUNE")] == ["b1", "f1"]
    assert [i["item_id"] for i in store.search_items("e_p")] == ["f1"] and store.search_items("e%") == []
    assert [i["item_id"] for i in store.search_items("F1")] == ["f1"] and len(store.search_items("dune", limit=1)) == 1
    for bad, field in [({"domain": "b", "title": "t", "source": "api"}, "item_id"),
                       ({"item_id": "x", "domain": "b", "title": "t", "source": "web"}, "source"),
                       ({"item_id": "x", "domain": "b", "title": "t", "source": "api", "vector": [np.nan]}, "vector"),
                       ({"item_id": "x", "domain": "b", "title": "t", "source": "api", "fields": "text"}, "fields")]:
        with pytest.raises(StoreError, match=f"item 0: field '{field}'"):
            store.add_items([bad])


def test_versions_one_live(store):
    assert store.live_version() is None
    v1 = store.add_version("/m/v1", events_upto=10, metrics={"NDCG@10": np.float32(0.25)}, note="import")
    v2 = store.add_version("/m/v2", events_upto=20, metrics={"NDCG@10": 0.3}, parent=v1)
    store.set_live(v1)
    assert store.live_version()["version"] == v1 == 1 and v2 == 2
    store.set_live(v2)
    assert [(v["version"], v["status"]) for v in store.versions()] == [(1, "retired"), (2, "live")]
    v3 = store.add_version("/m/v3", events_upto=30, metrics={}, parent=v2, status="live")
    store.set_status(v2, "rolled-back")
    got = {v["version"]: v for v in store.versions()}
    assert got[3]["status"] == "live" and got[2]["status"] == "rolled-back" and got[1]["status"] == "retired"
    assert got[1]["metrics"] == {"NDCG@10": 0.25} and got[2]["parent"] == 1 and got[3]["events_upto"] == 30
    assert got[1]["note"] == "import" and got[1]["path"] == "/m/v1" and got[1]["created"] > 1.6e9
    with pytest.raises(StoreError, match="unknown model version 9"):
        store.set_live(9)
    assert store.live_version()["version"] == v3


def test_updates_newest_first(store):
    first = store.add_update({"started": 100.0, "seconds": 2.5, "from_version": 1, "to_version": 2, "events": 40,
                              "metrics_before": {"NDCG@10": 0.2}, "metrics_after": {"NDCG@10": float("nan")},
                              "decision": "swapped", "note": ""})
    second = store.add_update({"started": 200.0, "decision": "skipped"})
    got = store.updates()
    assert [u["id"] for u in got] == [second, first] and got[1]["events"] == 40 and got[1]["seconds"] == 2.5
    assert math.isnan(got[1]["metrics_after"]["NDCG@10"]) and got[0]["metrics_before"] == {}
    assert len(store.updates(limit=1)) == 1
    with pytest.raises(StoreError, match="unknown field 'oops'"):
        store.add_update({"started": 1.0, "oops": 1})


def test_keys_create_check_revoke(store):
    token = store.create_key("ingest", "write")
    prefix, key_id, secret = token.split("_", 2)
    assert prefix == "mk" and len(key_id) == 16 and len(secret) >= 43
    assert store.check_key(token) == "write" and store.create_key("ops", "admin") != token
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), f"mk_{key_id}_", "mk_nope_x", "", "mk", None, 42):
        assert store.check_key(bad) is None
    with pytest.raises(StoreError, match="'ingest' exists"):
        store.create_key("ingest", "admin")
    with pytest.raises(StoreError, match="field 'scope'"):
        store.create_key("x", "root")
    store.revoke_key("ingest")
    assert store.check_key(token) is None and store.check_key(store.create_key("ingest", "admin")) == "admin"
    assert {k["name"]: k["scope"] for k in store.keys()} == {"ingest": "admin", "ops": "admin"}
    with pytest.raises(StoreError, match="no API key named 'ghost'"):
        store.revoke_key("ghost")


def test_meta_round_trip(store):
    assert store.get_meta("seen", "none") == "none"
    store.set_meta("seen", {"seq": 5, "tags": ["a"]})
    assert store.get_meta("seen") == {"seq": 5, "tags": ["a"]}


def test_concurrent_writers_lose_and_double_nothing(store):
    threads, batches, size = 4, 15, 20
    # every batch is sent by two threads: half the submissions are duplicates
    work = [[[ev(f"u{(t // 2) * 100 + b}", f"i{j}", float(b * size + j), event_id=f"t{t // 2}-b{b}-{j}")
              for j in range(size)] for b in range(batches)] for t in range(threads)]
    results, errors = [[] for _ in range(threads)], []

    def send(t):
        try:
            for batch in work[t]:
                results[t].append(store.add_events(batch))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    pool = [threading.Thread(target=send, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert errors == []
    unique = threads // 2 * batches * size
    assert sum(r["accepted"] for rs in results for r in rs) == unique == store.counts()["events"]
    assert sum(r["duplicates"] for rs in results for r in rs) == unique
    seqs = [s for rs in results for r in rs for s in r["seqs"] if s is not None]
    assert sorted(seqs) == list(range(1, unique + 1)) and store.last_seq() == unique
    assert sum(n for _, n in store.popular(k=1000)) == unique
    assert store.events()["seq"].tolist() == list(range(1, unique + 1))
