"""Bounded HTTP load generator for benchmarks/run_serving.py: a separate process, standard library only.

    python benchmarks/loadgen.py SPEC.json        -> prints one line `RESULT {json}` on stdout

SPEC: {"host", "port", "scenario", ...}; every scenario is bounded in count and in time.
- "open":   open loop at `rate` requests/s for `count` requests (at most `seconds`); request i is
            scheduled at t0 + i / rate and its latency runs from that scheduled time, not from the
            moment a worker got to send it, so a slow server cannot hide its queue (no coordinated
            omission). `workers` keep-alive connections send them.
- "closed": saturation: `concurrency` connections each send the next request as soon as the last
            answer arrived, for `seconds` (at most `count` requests); latency = send to answer.
- "ingest": closed loop of POST /events with `batch` random events (user from `users`, item from
            `items`, a fresh event_id) per request.
- "effect": event-to-effect, sequential trials: read a user's recommendations, post an event on its
            top item, then read again until the answer's as_of_seq >= the acknowledged last_seq and
            the item left the list; time from the acknowledgement to that answer.
- "ryw":    read-your-writes, `trials` trials on `concurrency` connections: random user, an item
            (one of the user's current top-k or a random catalogue item), write, read once at once;
            success when as_of_seq >= the write's last_seq and the item is not recommended.
"""
from __future__ import annotations

import http.client
import itertools
import json
import random
import sys
import threading
import time
from urllib.parse import quote

BAR_SECONDS = 5.0


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects after a failure."""

    def __init__(self, host: str, port: int, headers: dict | None = None, timeout: float = 30.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.headers = dict(headers or {})
        self.conn = None

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body); status 0 when the connection failed (counted as an error)."""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                headers = dict(self.headers)
                if body is not None:
                    headers["Content-Type"] = "application/json"
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    return 0, b""
        return 0, b""


def percentile(values: list, q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def summary(latencies_s: list, errors: int, seconds: float, extra: dict | None = None) -> dict:
    ms = [x * 1000.0 for x in latencies_s]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "mean_ms": sum(ms) / len(ms) if ms else None,
            "max_ms": max(ms) if ms else None, "requests": len(ms) + errors, "errors": errors,
            "rps": (len(ms) + errors) / seconds if seconds > 0 else None, "seconds": seconds, **(extra or {})}


class Progress:
    """A line on stderr every few seconds: what is running and how far it got."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done, self.lock = label, total, 0, threading.Lock()
        self.start = self.last = time.perf_counter()

    def tick(self, n: int = 1) -> None:
        with self.lock:
            self.done += n
            now = time.perf_counter()
            if now - self.last >= BAR_SECONDS:
                self.last = now
                print(f"  [{self.label}] {self.done}/{self.total} in {now - self.start:.0f} s", file=sys.stderr,
                      flush=True)


def ok_answer(status: int, body: bytes) -> bool:
    return status == 200 and b'"items"' in body


def run_threads(n: int, target) -> None:
    threads = [threading.Thread(target=target, args=(w,), daemon=True) for w in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def open_loop(spec: dict) -> dict:
    paths, rate, count = spec["paths"], float(spec["rate"]), int(spec["count"])
    count = min(count, int(spec.get("seconds", 1e9) * rate))
    counter, lock = itertools.count(), threading.Lock()
    latencies, errors, ends = [], [0], []
    bar = Progress(f"open {rate:g} rps", count)
    t0 = time.perf_counter() + 0.2

    def worker(_):
        client = Client(spec["host"], spec["port"], spec.get("headers"))
        while True:
            with lock:
                i = next(counter)
            if i >= count:
                return
            scheduled = t0 + i / rate
            wait = scheduled - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            status, body = client.call("GET", paths[i % len(paths)])
            end = time.perf_counter()
            with lock:
                ends.append(end)
                if ok_answer(status, body):
                    latencies.append(end - scheduled)
                else:
                    errors[0] += 1
            bar.tick()

    run_threads(int(spec.get("workers", 16)), worker)
    return summary(latencies, errors[0], max(ends) - t0 if ends else 0.0, {"target_rps": rate})


def closed_loop(spec: dict, make_request, label: str, count_events=None) -> dict:
    """`make_request(rng)` -> (method, path, body, events in it); `concurrency` connections."""
    seconds, limit = float(spec["seconds"]), int(spec.get("count", 10 ** 9))
    latencies, errors, events, sent = [], [0], [0], itertools.count()
    lock, first_error = threading.Lock(), []
    bar = Progress(label, limit)
    start = time.perf_counter()
    deadline = start + seconds

    def worker(w):
        rng = random.Random(spec.get("seed", 0) * 1000 + w)
        client = Client(spec["host"], spec["port"], spec.get("headers"))
        while time.perf_counter() < deadline:
            with lock:
                if next(sent) >= limit:
                    return
            method, path, body, n = make_request(rng)
            began = time.perf_counter()
            status, answer = client.call(method, path, body)
            end = time.perf_counter()
            good = (count_events(status, answer, n) if count_events else ok_answer(status, answer))
            with lock:
                if good is False or good is None:
                    errors[0] += 1
                    if not first_error:
                        first_error.append(f"{status} {answer[:300]!r}")
                else:
                    latencies.append(end - began)
                    events[0] += n if good is True else good
            bar.tick()

    run_threads(int(spec["concurrency"]), worker)
    elapsed = time.perf_counter() - start
    extra = {"events_per_s": events[0] / elapsed, "events": events[0]} if count_events else {}
    return summary(latencies, errors[0], elapsed, {**extra, "first_error": first_error[0] if first_error else None})


def saturation(spec: dict) -> dict:
    paths = spec["paths"]
    pick = itertools.count()

    def make(rng):
        return "GET", paths[next(pick) % len(paths)], None, 0

    return closed_loop(spec, make, f"saturation x{spec['concurrency']}")


def ingest(spec: dict) -> dict:
    users, items, batch = spec["users"], spec["items"], int(spec["batch"])
    tag = spec.get("tag", "ev")
    ids = itertools.count()

    def make(rng):
        events = [{"user_id": rng.choice(users), "item_id": rng.choice(items), "type": "view",
                   "event_id": f"{tag}-{next(ids)}"} for _ in range(batch)]
        body = events[0] if batch == 1 else {"events": events}
        return "POST", "/events", json.dumps(body).encode(), batch

    def accepted(status, answer, n):
        if status != 200:
            return None
        got = json.loads(answer)["accepted"]
        return got if got == n else None

    return closed_loop(spec, make, f"ingest batch {batch}", count_events=accepted)


def recs_path(user: str, k: int) -> str:
    return f"/users/{quote(user, safe='')}/recommendations?k={k}"


def effect(spec: dict) -> dict:
    """Event-to-effect: acknowledgement of an event -> first recommendation that reflects it."""
    rng = random.Random(spec.get("seed", 0))
    client = Client(spec["host"], spec["port"], spec.get("headers"))
    users, k, trials = spec["users"], int(spec.get("k", 10)), int(spec["trials"])
    latencies, writes, polls, errors = [], [], [], 0
    bar = Progress("event-to-effect", trials)
    deadline = time.perf_counter() + float(spec.get("seconds", 600))
    for t in range(trials):
        if time.perf_counter() > deadline:
            break
        user = rng.choice(users)
        status, body = client.call("GET", recs_path(user, k))
        items = [x["item_id"] for x in json.loads(body)["items"]] if status == 200 else []
        if not items:
            errors += 1
            continue
        item = items[0]
        event = {"user_id": user, "item_id": item, "type": "view", "event_id": f"effect-{spec.get('seed', 0)}-{t}"}
        sent = time.perf_counter()
        status, body = client.call("POST", "/events", json.dumps(event).encode())
        acked = time.perf_counter()
        if status != 200:
            errors += 1
            continue
        last_seq = json.loads(body)["last_seq"]
        reflected, n = None, 0
        while time.perf_counter() - acked < float(spec.get("max_wait", 10.0)):
            status, body = client.call("GET", recs_path(user, k))
            n += 1
            if status == 200:
                answer = json.loads(body)
                if answer["as_of_seq"] >= last_seq and item not in {x["item_id"] for x in answer["items"]}:
                    reflected = time.perf_counter()
                    break
        if reflected is None:
            errors += 1
        else:
            latencies.append(reflected - acked)
            writes.append(acked - sent)
            polls.append(n)
        bar.tick()
    write_ms = sorted(w * 1000 for w in writes)
    return summary(latencies, errors, sum(latencies) + sum(writes),
                   {"write_p50_ms": percentile(write_ms, 50), "write_p99_ms": percentile(write_ms, 99),
                    "reads_per_effect": sum(polls) / len(polls) if polls else None, "trials": trials})


def read_your_writes(spec: dict) -> dict:
    users, items, k, trials = spec["users"], spec["items"], int(spec.get("k", 10)), int(spec["trials"])
    counter, lock = itertools.count(), threading.Lock()
    outcome = {"success": 0, "stale": 0, "recommended": 0, "errors": 0}
    latencies = []
    bar = Progress("read-your-writes", trials)
    start = time.perf_counter()
    deadline = start + float(spec.get("seconds", 600))

    def worker(w):
        rng = random.Random(spec.get("seed", 0) * 1000 + w)
        client = Client(spec["host"], spec["port"], spec.get("headers"))
        while time.perf_counter() < deadline:
            with lock:
                t = next(counter)
            if t >= trials:
                return
            user, item = rng.choice(users), rng.choice(items)
            if rng.random() < 0.5:              # half the trials write one of the user's current top-k
                status, body = client.call("GET", recs_path(user, k))
                top = [x["item_id"] for x in json.loads(body)["items"]] if status == 200 else []
                item = rng.choice(top) if top else item
            event = {"user_id": user, "item_id": item, "type": "view", "event_id": f"ryw-{spec.get('seed', 0)}-{t}"}
            began = time.perf_counter()
            status, body = client.call("POST", "/events", json.dumps(event).encode())
            if status != 200:
                with lock:
                    outcome["errors"] += 1
                continue
            last_seq = json.loads(body)["last_seq"]
            status, body = client.call("GET", recs_path(user, k))
            end = time.perf_counter()
            key = "errors"
            if status == 200:
                answer = json.loads(body)
                if answer["as_of_seq"] < last_seq:
                    key = "stale"
                elif item in {x["item_id"] for x in answer["items"]}:
                    key = "recommended"
                else:
                    key = "success"
            with lock:
                outcome[key] += 1
                latencies.append(end - began)
            bar.tick()

    run_threads(int(spec.get("concurrency", 4)), worker)
    done = sum(outcome.values())
    return summary(latencies, outcome["errors"], time.perf_counter() - start,
                   {"share": outcome["success"] / trials, "trials": trials, "completed": done,
                    "stale_reads": outcome["stale"], "written_item_recommended": outcome["recommended"]})


SCENARIOS = {"open": open_loop, "closed": saturation, "ingest": ingest, "effect": effect, "ryw": read_your_writes}


def main(path: str) -> None:
    with open(path) as fh:
        spec = json.load(fh)
    result = SCENARIOS[spec["scenario"]](spec)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
