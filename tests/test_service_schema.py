"""Schemathesis over the service's OpenAPI schema: no input makes it answer 5xx.

In process, every operation gets 25 generated requests that fit the schema and 25 that do not
(half of the fitting ones carry real user and item ids, so the model paths run, not only the
404s); then the schemathesis command line runs all its phases (examples, coverage, fuzzing,
stateful) against a real server process. Both with an admin key, so writes and admin calls run.
GET /stream is left out of both: it answers with a stream that lasts as long as the client listens,
which a request/response fuzzer waits on for ever (its validation is tested in test_dashboard_api).
"""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

import servicekit_proc as kit
from servicekit_proc import ServerProcess

EXAMPLES = 25
STREAM = "/stream"       # server-sent events: not a request/response operation
NEVER = 10**9           # --update-min-events: an update run is "skipped" at once (training is tested elsewhere)


@pytest.fixture(scope="module")
def world(shared_data, tmp_path_factory):
    return kit.world_dir(shared_data, tmp_path_factory)


def substitute(case, item: str, user: str, how: int) -> None:
    """Put real ids into a generated case (path parameters and event bodies) so it reaches the model."""
    params = case.path_parameters or {}
    if "item_id" in params:
        params["item_id"] = item
    if "user_id" in params:
        params["user_id"] = user
    body = case.body
    if isinstance(body, dict):
        events = body.get("events") if isinstance(body.get("events"), list) else [body]
        for event in events:
            if isinstance(event, dict) and "item_id" in event:
                event["item_id"] = item
                event.pop("domain", None)
                if how == 2 and "user_id" in event:
                    event["user_id"] = user


@pytest.fixture(scope="module")
def in_process(world, tmp_path_factory):
    """(service, app, admin key) on a private copy of the world."""
    from migrec.serving import Service, ServiceConfig, UpdatePolicy, create_app

    data_dir = kit.fresh_copy(world, tmp_path_factory.mktemp("schema") / "svc")
    service = Service(ServiceConfig(data_dir=str(data_dir), update=UpdatePolicy(min_events=NEVER)))
    key = service.store.create_key("fuzz", "admin")
    yield service, create_app(service=service), key
    service.store.close()


def test_no_generated_request_gets_a_server_error_in_process(in_process):
    service, app, key = in_process
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    items = [str(i) for i in service.live.model.item_ids_[:300]]
    users = [str(u) for u in range(1, 60)]
    statuses: Counter = Counter()
    errors: list = []
    operations = [op for op in (result.ok() for result in schema.get_all_operations()) if op.path != STREAM]

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode), item=st.sampled_from(items),
                   user=st.sampled_from(users), how=st.integers(0, 3))
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            def run(case, item, user, how):
                if mode.is_positive and how:
                    substitute(case, item, user, how)
                try:
                    response = case.call(headers={"X-API-Key": key})
                except Exception as exc:              # an exception escaping the app is a 500 too
                    errors.append((operation.label, mode.value, case.as_curl_command(), repr(exc)))
                    return
                statuses[operation.label, mode.value, response.status_code // 100] += 1
                if response.status_code >= 500:
                    errors.append((operation.label, mode.value, case.as_curl_command(), response.text[:500]))

            try:
                run()
            except Unsatisfiable:
                # nothing in the request to break (no parameters, no body, an optional header): only
                # negative generation may come up empty
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert errors == []
    labels = {op.label for op in operations}
    assert {"POST /events", "GET /users/{user_id}/recommendations", "DELETE /users/{user_id}", "POST /items",
            "POST /admin/rollback", "GET /items/{item_id}/similar"} <= labels
    assert all(statuses[label, "positive", 2] + statuses[label, "positive", 4] > 0 for label in labels)
    # the real ids reached the model paths, not only validation
    for label in ("POST /events", "GET /users/{user_id}/recommendations", "GET /users/{user_id}/interests",
                  "GET /items/{item_id}/similar", "POST /items"):
        assert statuses[label, "positive", 2] > 0, (label, statuses)


ITEM = "1"               # Toy Story, in the small world's "recent" domain
HOSTILE = [             # JSON that parses but cannot be echoed back as it came (found by hand, not generated)
    ("/events", '{"user_id": "\\ud800", "item_id": "1"}', ["body", "event", "user_id"]),
    ("/events", '{"events": [{"user_id": "u", "item_id": "1", "event_id": "x\\udfffy"}]}',
     ["body", "batch", "events", 0, "event_id"]),
    ("/events", '{"user_id": "u", "item_id": "1", "timestamp": 1e400}', ["body", "event", "timestamp"]),
    ("/events", '{"user_id": "u", "item_id": "1", "timestamp": NaN}', ["body", "event", "timestamp"]),
    ("/items", '{"item_id": "new", "domain": "recent", "title": "\\udfff"}', ["body", "title"]),
    ("/items", '{"item_id": "new", "domain": "recent", "title": "t", "fields": {"k": "\\ud800"}}',
     ["body", "fields", "k"]),
    ("/items", '{"item_id": "new", "domain": "recent", "title": "t", "fields": {"\\ud800": "x"}}', None),
    ("/admin/rollback", '{"version": -Infinity}', ["body", "version"]),
]


@pytest.mark.parametrize("path,body,loc", HOSTILE, ids=[f"{p}-{n}" for n, (p, _, _) in enumerate(HOSTILE)])
def test_inputs_json_cannot_echo_are_rejected_naming_the_field(in_process, path, body, loc):
    from fastapi.testclient import TestClient

    service, app, key = in_process
    assert service.live.has_item(ITEM) and service.live.item(ITEM)["domain"] == "recent"
    client = TestClient(app, raise_server_exceptions=False)
    r = client.post(path, content=body.encode(), headers={"X-API-Key": key, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert loc is None or loc in [d["loc"] for d in detail], detail


def test_schemathesis_finds_no_server_error_on_a_real_server(world, tmp_path):
    data_dir = kit.fresh_copy(world, tmp_path / "svc")
    keys = kit.add_keys(kit.sqlite_url(data_dir))
    with ServerProcess(data_dir, tmp_path / "server.log", args=["--update-min-events", str(NEVER)]) as server:
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
             "--checks", "not_a_server_error", "--header", f"X-API-Key: {keys['admin']}",
             "--max-examples", str(EXAMPLES), "--seed", "1", "--generation-database", "none", "--workers", "1",
             "--no-color", "--exclude-path", STREAM],
            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    assert selected and int(selected.group(1)) == int(selected.group(2)) - 1 >= 16, report[-3000:]   # all but /stream
    assert f"Tested: {selected.group(1)}" in report
    cases = re.search(r"(\d+) generated, (\d+) passed", report)
    assert cases and cases.group(1) == cases.group(2) and int(cases.group(1)) >= 16 * EXAMPLES, report[-3000:]
    assert "Traceback" not in server.output()
