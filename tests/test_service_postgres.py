"""The service on the real PostgreSQL server: `python -m migrec serve --store postgresql://...` in a
subprocess, the small two-domain world (tests/servicekit.py) imported into a database of its own.

The server is at MIGREC_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test, trust
auth); the tests create their databases through it and drop them afterwards. Without a server they
are skipped, except under CI=true, where they fail.
"""
from __future__ import annotations

import uuid

import psycopg
import pytest

import servicekit_proc as kit
from servicekit_proc import ServerProcess, ok


@pytest.fixture(scope="module")
def template(shared_data, tmp_path_factory):
    """The world imported once into a template database; each test gets a copy (CREATE DATABASE
    ... TEMPLATE) and a copy of the model versions folder."""
    admin = kit.postgres_or_skip()
    with kit.postgres_database(admin) as url:
        data_dir = kit.import_world(shared_data, tmp_path_factory.mktemp("pg-world"), url)
        yield admin, url, data_dir


@pytest.fixture
def world(template, tmp_path):
    admin, source, data_dir = template
    with kit.postgres_database(admin, template=source) as url:
        yield url, kit.fresh_copy(data_dir, tmp_path / "svc")


def rows(url: str, sql: str, args=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def test_import_put_the_world_in_postgresql(world):
    url, data_dir = world
    assert url.rsplit("/", 1)[1].startswith("migrec_t_")
    (events, users), = rows(url, "SELECT COUNT(*), COUNT(DISTINCT user_id) FROM events")
    assert users == 300 and events > 20_000
    (items,), = rows(url, "SELECT COUNT(*) FROM items WHERE source = 'catalogue'")
    assert items >= sum(len(v) for v in kit.items_by_domain(data_dir).values())
    assert rows(url, "SELECT version, status FROM versions") == [(1, "live")]
    # version paths are relative to the data directory: the model folder was copied with it
    assert (data_dir / "versions" / "v0001" / "manifest.json").is_file()


def test_api_tour_on_a_postgresql_server(world, tmp_path):
    url, data_dir = world
    keys = kit.add_keys(url)
    marker = f"pg-tour-{uuid.uuid4().hex[:10]}"
    with ServerProcess(data_dir, tmp_path / "server.log", store=url, args=["--update-min-events", "20"]) as server:
        with server.client() as client:
            result = kit.api_tour(client, keys, kit.items_by_domain(data_dir), marker)
            live = ok(client.get("/admin/versions"))["live"]
    assert "Traceback" not in server.output()
    assert marker not in server.output()
    # what the API said is what PostgreSQL holds
    assert rows(url, "SELECT COUNT(*) FROM events WHERE user_id = %s OR event_id LIKE %s", (marker, marker + "%")) \
        == [(0,)]
    assert rows(url, "SELECT item_id, source FROM items WHERE item_id = %s", (result["item"],)) == \
        [(result["item"], "api")]
    assert rows(url, "SELECT version FROM versions WHERE status = 'live'") == [(live,)]
    assert rows(url, "SELECT decision FROM updates") == [(result["update"]["decision"],)]
    (seq,), = rows(url, "SELECT MAX(seq) FROM events")
    assert seq >= 2 and rows(url, "SELECT COUNT(*) FROM events WHERE event_id = 'tour-1'") == [(1,)]


def test_kill_9_on_postgresql_loses_no_acknowledged_event_and_stores_none_twice(world, tmp_path):
    url, data_dir = world
    keys = kit.add_keys(url)
    items = [i for part in kit.items_by_domain(data_dir).values() for i in part]
    sent = kit.kill_nine_and_replay(lambda: ServerProcess(data_dir, tmp_path / "server.log", store=url).start(),
                                    keys["write"], items, batches=100)
    assert rows(url, "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events WHERE event_id LIKE 'kill-%%'") == \
        [(len(sent), len(sent))]
