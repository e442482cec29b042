"""What the dashboard reads, without a browser: the pages and their assets, /search, the recent
figures in /stats, the interest timeline, the live feed (unit) and GET /stream on a real server."""
from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

import servicekit
import servicekit_proc as kit
from migrec.serving import Service, ServiceConfig, create_app
from migrec.serving.feed import Feed, sse


@pytest.fixture(scope="module")
def world(shared_data, tmp_path_factory, torch_one_thread):
    return servicekit.imported_data_dir(shared_data, tmp_path_factory.mktemp("dash-world"))


@pytest.fixture
def client(world, tmp_path):
    svc = Service(ServiceConfig(data_dir=str(servicekit.copy_data_dir(world, tmp_path / "svc")), poll_seconds=0.2))
    key = svc.store.create_key("writer", "write")
    with TestClient(create_app(service=svc)) as c:
        c.key, c.svc = key, svc
        yield c


def test_pages_are_served_with_their_assets(client):
    user = client.svc.store.users(limit=1)[0]
    item = client.svc.live.model.item_ids_[0]
    pages = {"/dashboard/": "overview", f"/dashboard/users/{user}": "user", f"/dashboard/items/{item}": "item",
             "/dashboard/models": "models", "/dashboard/search?q=star": "search"}
    for url, name in pages.items():
        r = client.get(url)
        assert r.status_code == 200, url
        html = r.text
        assert f'data-page="{name}"' in html and 'id="api-key"' in html and '<label for="api-key">' in html
        assets = re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', html)
        assert any(a.split("?")[0].endswith(f"/{name}.js") for a in assets)
        for asset in assets:                      # every asset is served by the process itself
            got = client.get(asset)
            assert got.status_code == 200 and len(got.content) > 0, asset
            assert "max-age" in got.headers["cache-control"]
        assert not re.search(r'(?:src|href)="(?:https?:)?//', html)     # nothing from the internet
    assert 'data-user-id="%s"' % user in client.get(f"/dashboard/users/{user}").text
    assert client.get("/dashboard/items/no-such-item").status_code == 404
    assert client.get("/", follow_redirects=False).headers["location"] == "/dashboard/"
    chart = client.get("/dashboard/static/vendor/chart.umd.min.js").text
    assert "Chart.js v4" in chart[:200]


def test_the_dashboard_can_be_left_out(world, tmp_path):
    import argparse

    from migrec.cli.serve import add_parsers, config_from

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    args = parser.parse_args(["serve", "--data-dir", str(tmp_path / "d"), "--no-dashboard"])
    assert config_from(args).dashboard is False
    svc = Service(ServiceConfig(data_dir=str(servicekit.copy_data_dir(world, tmp_path / "svc")), dashboard=False))
    with TestClient(create_app(service=svc)) as c:
        assert c.get("/dashboard/").status_code == 404 and c.get("/search", params={"q": "star"}).status_code == 200


def test_search_finds_users_by_prefix_and_items_by_title(client):
    found = client.get("/search", params={"q": "star wars"}).json()
    titles = [i["title"] for i in found["items"]]
    assert "Star Wars (1977)" in titles
    assert all("star wars" in t.lower() for t in titles)
    by_id = client.get("/search", params={"q": "50"}).json()
    assert by_id["items"][0]["item_id"] == "50"            # the exact id comes first
    assert all(i["item_id"].startswith("50") or "50" in i["title"] for i in by_id["items"])
    users = client.get("/search", params={"q": "1", "limit": 200}).json()["users"]
    assert users and all(u.startswith("1") for u in users)
    assert set(users) == {u for u in client.svc.store.users(prefix="1", limit=1000)}
    assert client.get("/search", params={"q": ""}).status_code == 422
    assert client.get("/search", params={"q": "zzzz-nothing"}).json() == {"q": "zzzz-nothing", "users": [], "items": []}


def test_stats_carry_recent_latency_events_per_minute_and_the_cold_share(client):
    item = client.svc.live.model.item_ids_[3]
    for n in range(4):
        r = client.post("/events", json={"user_id": f"dash-{n}", "item_id": item}, headers={"X-API-Key": client.key})
        assert r.status_code == 200
    for user in ("dash-0", "never-seen-1", "never-seen-2"):
        assert client.get(f"/users/{user}/recommendations").status_code == 200
    stats = client.get("/stats").json()
    assert sum(m["events"] for m in stats["recent"]["events_per_minute"]) == 4
    assert len(stats["recent"]["events_per_minute"]) == 60
    route = stats["recent"]["latency"]["GET /users/{user_id}/recommendations"]
    assert route["count"] == 3 and 0 < route["p50_ms"] <= route["p95_ms"] <= route["p99_ms"]
    assert stats["recent"]["latency"]["POST /events"]["count"] == 4
    assert stats["metrics"]["paths"] == {"warm": 1.0, "cold": 2.0}
    assert stats["metrics"]["cold_share"] == pytest.approx(2 / 3)
    assert stats["model"]["version"] == 1 and stats["model"]["items"] == len(client.svc.live.model.item_ids_)
    assert "valid_ndcg@10" in stats["model"]["metrics"]


def test_interest_timeline_covers_the_history_and_places_migrations(client):
    store, live = client.svc.store, client.svc.live
    checked = 0
    for user in store.users(limit=60):
        got = client.get(f"/users/{user}/interests").json()
        t = got["timeline"]
        n = got["events"]
        assert sum(p["events"] for p in t["periods"]) == n
        assert [p["start"] for p in t["periods"]] == list(range(0, n, t["every"]))
        assert len(t["periods"]) <= live.timeline_periods
        shares = np.array([s["shares"] for s in t["series"]])
        np.testing.assert_allclose(shares.sum(axis=0), 1.0, atol=2e-3)     # each period sums to one
        assert len([s for s in t["series"] if s["topic"] != "other"]) <= live.timeline_topics
        for m in got["migrations"]:
            assert 0 <= m["period"] < len(t["periods"])
            checked += 1
    assert checked > 0                     # some of these users have a detected migration
    assert client.get("/users/nobody-at-all/interests").json()["timeline"]["periods"] == []


def test_stream_rejects_bad_input_before_it_streams(client):
    # the schema fuzzers leave GET /stream out (it never ends): its validation is checked here
    assert client.get("/stream", params={"user_id": "bad\x01id"}).status_code == 422
    assert client.get("/stream", params={"user_id": "x" * 300}).status_code == 422
    client.svc.config.auth_reads = True
    try:
        assert client.get("/stream").status_code == 401
    finally:
        client.svc.config.auth_reads = False


def test_feed_sends_each_user_only_their_own_events():
    async def scenario():
        feed = Feed()
        alice, anyone = feed.subscribe("alice"), feed.subscribe(None)
        rows = [{"user_id": "alice", "item_id": "i1", "domain": "d", "timestamp": 1.0},
                {"user_id": "bob", "item_id": "i2", "domain": "d", "timestamp": 2.0}]
        writer = threading.Thread(target=feed.events, args=(rows, 7))      # request handlers publish from threads
        writer.start()
        writer.join()
        got_alice = await asyncio.wait_for(alice.queue.get(), 2)
        got_anyone = await asyncio.wait_for(anyone.queue.get(), 2)
        feed.events([rows[1]], 8)                                            # bob only: alice hears nothing
        feed.publish("version", {"model_version": 2})
        after = await asyncio.wait_for(alice.queue.get(), 2)
        feed.unsubscribe(alice)
        return feed, got_alice, got_anyone, after

    feed, got_alice, got_anyone, after = asyncio.run(scenario())
    assert got_alice == ("events", {"user_id": "alice", "last_seq": 7,
                                    "events": [{"item_id": "i1", "domain": "d", "timestamp": 1.0}]})
    assert got_anyone == ("events", {"accepted": 2, "last_seq": 7})        # counts only, no user ids
    assert after == ("version", {"model_version": 2})
    assert len(feed) == 1 and feed.published_seq == 8
    assert sse("events", {"a": 1}) == 'event: events\ndata: {"a":1}\n\n'


def _read_messages(url, params, out, stop):
    with httpx.Client(timeout=30) as c, c.stream("GET", url, params=params) as r:
        out.append(("status", r.status_code))
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
            if stop.is_set():
                break


def test_stream_on_a_real_server_follows_one_user(shared_data, tmp_path_factory, tmp_path):
    data_dir = kit.fresh_copy(kit.world_dir(shared_data, tmp_path_factory), tmp_path / "svc")
    key = kit.add_keys(kit.sqlite_url(data_dir))["write"]
    item = kit.items_by_domain(data_dir)["recent"][0]
    with kit.ServerProcess(data_dir, tmp_path / "server.log") as server:
        mine, everyone, stop = [], [], threading.Event()
        readers = [threading.Thread(target=_read_messages, args=(f"{server.url}/stream", p, out, stop), daemon=True)
                   for p, out in (({"user_id": "watched"}, mine), ({}, everyone))]
        for t in readers:
            t.start()
        deadline = time.monotonic() + 30
        while len(mine) < 2 or len(everyone) < 2:          # both streams said hello
            assert time.monotonic() < deadline, (mine, everyone)
            time.sleep(0.05)
        with server.client() as c:
            for user in ("other", "watched"):
                assert c.post("/events", json={"user_id": user, "item_id": item, "timestamp": 5.0},
                              headers={"X-API-Key": key}).status_code == 200
            while not [m for m in mine if m[0] == "events"] or len([m for m in everyone if m[0] == "events"]) < 2:
                assert time.monotonic() < deadline, (mine, everyone)
                time.sleep(0.02)
            stop.set()
            c.post("/events", json={"user_id": "watched", "item_id": item}, headers={"X-API-Key": key})
        for t in readers:
            t.join(timeout=10)
    assert mine[0] == ("status", 200) and mine[1][0] == "hello"
    events = [m[1] for m in mine if m[0] == "events"]
    assert events[0]["user_id"] == "watched" and events[0]["events"] == [
        {"item_id": item, "domain": "recent", "timestamp": 5.0}]
    assert all(e["user_id"] == "watched" for e in events)        # the other user's event never came
    counts = [m[1] for m in everyone if m[0] == "events"]
    assert all(set(c) == {"accepted", "last_seq"} for c in counts)


def test_interests_carry_a_multi_interest_models_own_interests(shared_data, tmp_path, client):
    from migrec.serving import Store
    from migrec.serving.bootstrap import import_dataset

    assert client.get("/users/1/interests").json()["model_interests"] is None     # a single-vector model
    data = servicekit.two_domain_data(shared_data, tmp_path / "dataset", users=120)
    data_dir = tmp_path / "mi"
    store = Store.open(f"sqlite:///{data_dir / 'store.db'}")
    import_dataset(store, data_dir / "versions", "parquet", str(data), model="multi-interest", blend=True,
                   encoder=servicekit.ENCODER, params={**servicekit.PARAMS, "n_interests": 3, "epochs": 1},
                   cache_dir=None, progress=False)
    store.close()
    svc = Service(ServiceConfig(data_dir=str(data_dir)))
    with TestClient(create_app(service=svc)) as c:
        user = svc.store.users(limit=1)[0]
        got = c.get(f"/users/{user}/interests").json()["model_interests"]
        history = [h[1] for h in svc.store.history(user, limit=svc.config.max_history)]
        catalogue = svc.live.catalogue.reset_index()[["item_id", "title", "category"]]
        expected = svc.live.model.base.describe_interests(history, catalogue)
        assert [g["name"] for g in got] == [g["name"] for g in expected]
        assert [g["weight"] for g in got] == pytest.approx([g["weight"] for g in expected])
        assert sum(g["weight"] for g in got) == pytest.approx(1.0, abs=1e-4)
        assert 1 <= len(got) <= 3 and all(g["items"] and g["suggestions"] for g in got)
        assert not set(sum((g["suggestions"] for g in got), [])) & {svc.live.title_of(i) for i in history}
        assert 'id="model-interests"' in c.get(f"/dashboard/users/{user}").text
