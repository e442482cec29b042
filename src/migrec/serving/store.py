"""The service's store: events, item counts, items, model versions, update runs and API keys.

One SQLAlchemy Core schema serves SQLite (one file, WAL, synchronous=FULL, secure_delete=ON) and
PostgreSQL (psycopg 3). Writers are serialized (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction
advisory lock), so event seqs become visible in order and idempotency checks cannot race.

    store = Store.open("sqlite:////srv/migrec/store.db")
    store.add_events([{"user_id": "u1", "item_id": "i9", "domain": "books", "event": "click",
                       "timestamp": 1.7e9, "event_id": "e-1"}])
    store.history("u1", limit=200)      # [(seq, item_id, domain, event, timestamp)], oldest first
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from collections import Counter
from contextlib import contextmanager
from numbers import Real
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ..data.histories import Histories
from ..data.schema import DEFAULT_DOMAIN

log = logging.getLogger(__name__)

DAY = 86400.0
WRITE_LOCK = 0x6D696772                  # PostgreSQL advisory lock id held by every writing transaction
SCOPES = ("write", "admin")
SOURCES = ("catalogue", "api")
UPDATE_FIELDS = ("started", "seconds", "from_version", "to_version", "events", "metrics_before",
                 "metrics_after", "decision", "note")
EVENT_COLUMNS = ["user_id", "item_id", "domain", "event", "timestamp", "seq"]
ITEM_COLUMNS = "item_id, domain, title, fields, vector, encoder, source, added"
_CHUNK = 500                             # ids per IN (...) list

metadata = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")     # SQLite AUTOINCREMENT needs INTEGER
_str = lambda name, **kw: sa.Column(name, sa.Text, nullable=kw.pop("nullable", False), **kw)  # noqa: E731
_meta = sa.Table("meta", metadata, _str("name", primary_key=True), _str("value"))
_events = sa.Table(
    "events", metadata, sa.Column("seq", _ID, primary_key=True, autoincrement=True),
    _str("event_id", nullable=True, unique=True), _str("user_id"), _str("item_id"), _str("domain"), _str("event"),
    sa.Column("timestamp", sa.Float, nullable=False), sa.Column("received", sa.Float, nullable=False),
    sa.Index("ix_events_user_seq", "user_id", "seq"), sqlite_autoincrement=True)
_item_stats = sa.Table(
    "item_stats", metadata, _str("item_id", primary_key=True), sa.Column("day", sa.Integer, primary_key=True),
    _str("domain"), sa.Column("count", sa.Integer, nullable=False),
    sa.Index("ix_item_stats_domain_day", "domain", "day"))
_items = sa.Table(
    "items", metadata, _str("item_id", primary_key=True), _str("domain"), _str("title"), _str("fields"),
    sa.Column("vector", sa.LargeBinary), _str("encoder", nullable=True), _str("source"),
    sa.Column("added", sa.Float, nullable=False))
_versions = sa.Table(
    "versions", metadata, sa.Column("version", sa.Integer, primary_key=True, autoincrement=True), _str("path"),
    sa.Column("created", sa.Float, nullable=False), sa.Column("events_upto", sa.BigInteger, nullable=False),
    _str("metrics"), sa.Column("parent", sa.Integer), _str("status"), _str("note"),
    sa.Index("ux_versions_one_live", "status", unique=True, sqlite_where=sa.text("status = 'live'"),
             postgresql_where=sa.text("status = 'live'")))
_updates = sa.Table(
    "updates", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started", sa.Float), sa.Column("seconds", sa.Float), sa.Column("from_version", sa.Integer),
    sa.Column("to_version", sa.Integer), sa.Column("events", sa.BigInteger), _str("metrics_before"),
    _str("metrics_after"), _str("decision", nullable=True), _str("note", nullable=True))
_api_keys = sa.Table(
    "api_keys", metadata, _str("key_id", primary_key=True), _str("name", unique=True), _str("hash"), _str("scope"),
    sa.Column("created", sa.Float, nullable=False), sa.Column("revoked", sa.Float))


def _v1(conn) -> None:
    """Every table of schema version 1."""
    metadata.create_all(conn, tables=[_events, _item_stats, _items, _versions, _updates, _api_keys])


MIGRATIONS = [_v1]                        # step i takes a store from schema version i to i + 1; append only


class StoreError(ValueError):
    """Bad input to the store (or an unusable store); `field` and `index` say where when known."""

    def __init__(self, message: str, field: str | None = None, index: int | None = None):
        super().__init__(message)
        self.field, self.index = field, index


def _text(value, field: str, where: str, index: int | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        got = "missing" if value is None else f"{value!r} is not a non-empty string"
        raise StoreError(f"{where}: field {field!r} {got}", field, index)
    return value


def _event_row(i: int, e) -> tuple:
    where = f"event {i}"
    if not isinstance(e, dict):
        raise StoreError(f"{where}: expected an object, got {type(e).__name__}", None, i)
    user, item = _text(e.get("user_id"), "user_id", where, i), _text(e.get("item_id"), "item_id", where, i)
    domain = DEFAULT_DOMAIN if e.get("domain") is None else _text(e["domain"], "domain", where, i)
    kind = "interaction" if e.get("event") is None else _text(e["event"], "event", where, i)
    ts = e.get("timestamp")
    if ts is None or isinstance(ts, bool) or not isinstance(ts, Real) or not math.isfinite(ts):
        raise StoreError(f"{where}: field 'timestamp' must be a finite number of seconds, got {ts!r}", "timestamp", i)
    eid = e.get("event_id")
    if eid is not None:
        eid = _text(eid, "event_id", where, i)
    return eid, user, item, domain, kind, float(ts)


def _day(ts: float) -> int:
    return int(math.floor(ts / DAY))


def _plain(x):
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serializable")


def _dumps(value, field: str) -> str:
    """JSON text (numpy scalars and arrays as plain numbers and lists; NaN kept)."""
    try:
        return json.dumps(value, default=_plain)
    except (TypeError, ValueError) as err:
        raise StoreError(f"field {field!r}: {err}", field) from None


def _item_row(i: int, r, now: float) -> dict:
    where = f"item {i}"
    if not isinstance(r, dict):
        raise StoreError(f"{where}: expected an object, got {type(r).__name__}", None, i)
    item_id, domain = _text(r.get("item_id"), "item_id", where, i), _text(r.get("domain"), "domain", where, i)
    fields, vector, encoder, title = r.get("fields") or {}, r.get("vector"), r.get("encoder"), r.get("title")
    if not isinstance(fields, dict):
        raise StoreError(f"{where}: field 'fields' must be an object of text fields", "fields", i)
    if r.get("source") not in SOURCES:
        raise StoreError(f"{where}: field 'source' must be one of {SOURCES}, got {r.get('source')!r}", "source", i)
    if not isinstance(title, (str, type(None))):
        raise StoreError(f"{where}: field 'title' must be a string", "title", i)
    if vector is not None:
        vector = np.asarray(vector, dtype=np.float32)
        if vector.ndim != 1 or not len(vector) or not np.isfinite(vector).all():
            raise StoreError(f"{where}: field 'vector' must be a non-empty finite 1-d array", "vector", i)
    return {"item_id": item_id, "domain": domain, "title": title or "", "fields": _dumps(fields, "fields"),
            "vector": None if vector is None else vector.astype("<f4").tobytes(), "source": r["source"],
            "encoder": None if encoder is None else _text(encoder, "encoder", where, i), "added": now}


def _item_dict(row) -> dict:
    item_id, domain, title, fields, vector, encoder, source, added = row
    return {"item_id": item_id, "domain": domain, "title": title, "fields": json.loads(fields),
            "vector": None if vector is None else np.frombuffer(bytes(vector), dtype="<f4").astype(np.float32),
            "encoder": encoder, "source": source, "added": added}


def _setup_sqlite(engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None          # the driver never begins on its own; see _begin
        cur = dbapi_conn.cursor()
        for pragma in ("busy_timeout=30000", "journal_mode=WAL", "synchronous=FULL", "secure_delete=ON",
                       "foreign_keys=ON"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn):
        # writers take the write lock up front (no read-to-write upgrade failures); readers run in autocommit
        if conn.get_execution_options().get("migrec_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")


class Store:
    """Events, item counts, items, model versions, update runs and API keys, in SQLite or PostgreSQL."""

    def __init__(self, engine: sa.Engine, kind: str, url: str):
        self.engine, self.kind, self.url = engine, kind, url
        self._writer = engine.execution_options(migrec_write=True)
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")   # PostgreSQL: no BEGIN/ROLLBACK
        self._ph = "?" if kind == "sqlite" else "%s"

    @classmethod
    def open(cls, url: str) -> "Store":
        """Connect ("sqlite:///abs/path.db" or "postgresql://user@host:port/db"), create or migrate the schema."""
        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError as err:
            raise StoreError(f"store url {url!r}: {err}", "store") from None
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                raise StoreError(f"store url {url!r}: SQLite needs a file (sqlite:///abs/path.db)", "store")
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(parsed.set(drivername="sqlite+pysqlite"), pool_size=8, max_overflow=56,
                                      connect_args={"check_same_thread": False, "timeout": 30})
            _setup_sqlite(engine)
        elif backend == "postgresql":
            engine = sa.create_engine(parsed.set(drivername="postgresql+psycopg"), pool_size=8, max_overflow=24,
                                      pool_pre_ping=True)
        else:
            raise StoreError(f"store url {url!r}: unsupported database {backend!r} (sqlite or postgresql)", "store")
        store = cls(engine, backend, parsed.render_as_string(hide_password=True))
        try:
            store._migrate()
        except BaseException:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- plumbing ----------------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql if self._ph == "?" else sql.replace("?", "%s")

    @contextmanager
    def _write(self):
        """One writing transaction; writers queue for the store's single write lock."""
        with self._writer.begin() as conn:
            if self.kind == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield conn

    def _rows(self, sql: str, args=()) -> list[tuple]:
        """One read statement, outside any transaction (SQLite: straight on the pooled driver connection)."""
        if self.kind == "sqlite":
            raw = self.engine.raw_connection()
            try:
                cur = raw.cursor()
                return cur.execute(sql, tuple(args)).fetchall()
            finally:
                raw.close()
        with self._reader.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(self._sql(sql), tuple(args))]

    def _existing(self, conn, table: str, column: str, values) -> set:
        values, found = list(dict.fromkeys(values)), set()
        for lo in range(0, len(values), _CHUNK):
            part = values[lo:lo + _CHUNK]
            sql = f"SELECT {column} FROM {table} WHERE {column} IN ({', '.join('?' * len(part))})"
            found.update(r[0] for r in conn.exec_driver_sql(self._sql(sql), tuple(part)))
        return found

    def _migrate(self) -> None:
        with self._write() as conn:
            _meta.create(conn, checkfirst=True)
            row = conn.execute(sa.select(_meta.c.value).where(_meta.c.name == "schema_version")).first()
            have, known = (int(json.loads(row[0])) if row else 0), len(MIGRATIONS)
            if have > known:
                raise StoreError(f"the store {self.url} is at schema version {have}, newer than this code knows "
                                 f"({known}): upgrade migrec", "schema_version")
            for step in MIGRATIONS[have:]:
                step(conn)
            if have < known:
                self._put_meta(conn, "schema_version", known)

    def _put_meta(self, conn, key: str, value) -> None:
        conn.execute(sa.text("INSERT INTO meta (name, value) VALUES (:k, :v) ON CONFLICT (name) DO UPDATE "
                             "SET value = excluded.value"), {"k": key, "v": _dumps(value, "value")})

    def schema_version(self) -> int:
        return int(self.get_meta("schema_version", 0))

    def get_meta(self, key: str, default=None):
        """The JSON value stored under `key`, or `default`."""
        rows = self._rows("SELECT value FROM meta WHERE name = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def set_meta(self, key: str, value) -> None:
        """Store a JSON-serializable value under `key`."""
        with self._write() as conn:
            self._put_meta(conn, _text(key, "key", "meta"), value)

    # -- events ------------------------------------------------------------------------------------
    def add_events(self, events: list[dict]) -> dict:
        """Store a batch in one durable transaction (all or nothing); repeated event_ids are skipped.

        Returns {"accepted", "duplicates", "last_seq", "seqs": seq or None per input row}."""
        if not isinstance(events, (list, tuple)):
            raise StoreError(f"events must be a list of event objects, got {type(events).__name__}", "events")
        rows = [_event_row(i, e) for i, e in enumerate(events)]
        seqs: list[int | None] = [None] * len(rows)
        with self._write() as conn:
            stored = self._existing(conn, "events", "event_id", [r[0] for r in rows if r[0] is not None])
            keep, seen = [], set()
            for i, r in enumerate(rows):
                if r[0] is not None:
                    if r[0] in stored or r[0] in seen:
                        continue
                    seen.add(r[0])
                keep.append(i)
            if keep:
                now, names = time.time(), ("event_id", "user_id", "item_id", "domain", "event", "timestamp")
                params = [{**dict(zip(names, rows[i])), "received": now} for i in keep]
                got = conn.execute(sa.insert(_events).returning(_events.c.seq, sort_by_parameter_order=True), params)
                for i, seq in zip(keep, got.scalars()):
                    seqs[i] = seq
                stats, domains = Counter(), {}
                for i in keep:
                    key = (rows[i][2], _day(rows[i][5]))
                    stats[key] += 1
                    domains.setdefault(key, rows[i][3])
                conn.exec_driver_sql(self._sql(
                    "INSERT INTO item_stats (item_id, day, domain, count) VALUES (?, ?, ?, ?) ON CONFLICT "
                    "(item_id, day) DO UPDATE SET count = item_stats.count + excluded.count"),
                    [(item, day, domains[item, day], n) for (item, day), n in stats.items()])
            last = conn.exec_driver_sql("SELECT max(seq) FROM events").scalar()
        return {"accepted": len(keep), "duplicates": len(rows) - len(keep), "last_seq": int(last or 0), "seqs": seqs}

    def history(self, user_id: str, limit: int | None = None) -> list[tuple]:
        """The user's events [(seq, item_id, domain, event, timestamp)], oldest first; the newest `limit`."""
        sql = "SELECT seq, item_id, domain, event, timestamp FROM events WHERE user_id = ? ORDER BY seq"
        if limit is None:
            return self._rows(sql, (user_id,))
        return self._rows(sql + " DESC LIMIT ?", (user_id, int(limit)))[::-1]

    def has_user(self, user_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM events WHERE user_id = ? LIMIT 1", (user_id,)))

    def last_seq(self) -> int:
        """The highest stored seq; 0 when empty (seqs are never reused, even after deletions)."""
        return int(self._rows("SELECT max(seq) FROM events")[0][0] or 0)

    def events(self, after_seq: int = 0, upto_seq: int | None = None) -> pd.DataFrame:
        """Events with after_seq < seq <= upto_seq, ordered by seq (columns user_id..timestamp, seq)."""
        sql, args = "SELECT user_id, item_id, domain, event, timestamp, seq FROM events WHERE seq > ?", [int(after_seq)]
        if upto_seq is not None:
            sql, args = sql + " AND seq <= ?", args + [int(upto_seq)]
        frame = pd.DataFrame(self._rows(sql + " ORDER BY seq", args), columns=EVENT_COLUMNS)
        return frame.astype({"timestamp": np.float64, "seq": np.int64})

    def histories(self, upto_seq: int | None = None, users=None) -> Histories:
        """Every user's (or `users`') items and times, in seq order, from the events with seq <= upto_seq."""
        base = "SELECT user_id, item_id, timestamp FROM events WHERE seq <= ?"
        upto = int(upto_seq) if upto_seq is not None else (1 << 62)
        if users is None:
            rows = self._rows(base + " ORDER BY user_id, seq", (upto,))
        else:
            users, rows = list(dict.fromkeys(map(str, users))), []
            for lo in range(0, len(users), _CHUNK):
                part = users[lo:lo + _CHUNK]
                rows += self._rows(f"{base} AND user_id IN ({', '.join('?' * len(part))}) ORDER BY user_id, seq",
                                   (upto, *part))
        out = Histories()
        if rows:
            user, item, times = (np.asarray(c, dtype=object) for c in zip(*rows))
            starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
            for lo, hi in zip(starts, np.r_[starts[1:], len(user)]):
                out.append(user[lo], item[lo:hi], times[lo:hi].astype(np.float64))
        return out

    def delete_user(self, user_id: str) -> int:
        """Erase a user's events and their share of the item counts, leaving no copy in the files; returns
        the number of events removed."""
        user = _text(user_id, "user_id", "delete_user")
        with self._write() as conn:
            rows = conn.exec_driver_sql(self._sql("SELECT item_id, timestamp FROM events WHERE user_id = ?"),
                                        (user,)).all()
            if rows:
                drop = Counter((item, _day(ts)) for item, ts in rows)
                conn.exec_driver_sql(self._sql("UPDATE item_stats SET count = count - ? WHERE item_id = ? AND day = ?"),
                                     [(n, item, day) for (item, day), n in drop.items()])
                conn.exec_driver_sql("DELETE FROM item_stats WHERE count <= 0")
                conn.exec_driver_sql(self._sql("DELETE FROM events WHERE user_id = ?"), (user,))
                if self.kind == "sqlite":
                    # secure_delete zeroes freed cells, but an index page rebalanced by the delete can keep
                    # copies of removed keys in its unused space: the events indexes are rebuilt, and their
                    # old pages freed (and zeroed) in the same transaction
                    conn.exec_driver_sql("REINDEX events")
        if rows:
            self._scrub()
        return len(rows)

    def _scrub(self) -> None:
        """Push deleted rows out of every file: SQLite checkpoints and empties the WAL (secure_delete has zeroed
        the freed space); PostgreSQL vacuums the touched tables."""
        if self.kind == "postgresql":
            with self._reader.connect() as conn:          # autocommit: VACUUM cannot run in a transaction
                conn.exec_driver_sql("VACUUM events, item_stats")
            return
        raw = self.engine.raw_connection()
        try:
            for _ in range(100):                          # a reader on an older snapshot holds the WAL: wait
                if not raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
                    return
                time.sleep(0.05)
            log.warning("%s: readers kept the WAL busy; deleted rows leave it at the next checkpoint", self.url)
        finally:
            raw.close()

    # -- counts ------------------------------------------------------------------------------------
    def popular(self, domain: str | None = None, k: int = 10, since_day: int | None = None,
                exclude=()) -> list[tuple[str, int]]:
        """The k items with the most events [(item_id, count)] (in `domain`, on days >= since_day)."""
        exclude, where, args = set(exclude), [], []
        if domain is not None:
            where, args = where + ["domain = ?"], args + [domain]
        if since_day is not None:
            where, args = where + ["day >= ?"], args + [int(since_day)]
        sql = (f"SELECT item_id, SUM(count) AS n FROM item_stats {'WHERE ' + ' AND '.join(where) if where else ''} "
               "GROUP BY item_id ORDER BY n DESC, item_id LIMIT ?")
        rows = self._rows(sql, (*args, int(k) + len(exclude)))
        return [(item, int(n)) for item, n in rows if item not in exclude][:int(k)]

    def item_counts_by_day(self, item_id: str) -> list[tuple[int, int]]:
        return self._rows("SELECT day, count FROM item_stats WHERE item_id = ? ORDER BY day", (item_id,))

    def counts(self) -> dict:
        """Of the event log: distinct users, events, distinct items, distinct domains, last seq."""
        # one statement per figure, each answered from an index (one statement over the events table
        # made three temporary b-trees: 234 ms against 32 ms on 487k events); items and domains come
        # from the day counts, which hold exactly the (item, domain) pairs of the stored events
        queries = {"users": "SELECT COUNT(DISTINCT user_id) FROM events", "events": "SELECT COUNT(*) FROM events",
                   "items": "SELECT COUNT(DISTINCT item_id) FROM item_stats",
                   "domains": "SELECT COUNT(DISTINCT domain) FROM item_stats", "last_seq": "SELECT max(seq) FROM events"}
        return {key: int(self._rows(sql)[0][0] or 0) for key, sql in queries.items()}

    def users(self, prefix: str = "", limit: int = 50) -> list[str]:
        """User ids starting with `prefix` (case-sensitive), sorted."""
        where, args = ("WHERE substr(user_id, 1, ?) = ?", (len(prefix), prefix)) if prefix else ("", ())
        sql = f"SELECT DISTINCT user_id FROM events {where} ORDER BY user_id LIMIT ?"
        return [r[0] for r in self._rows(sql, (*args, int(limit)))]

    # -- items -------------------------------------------------------------------------------------
    def add_items(self, rows: list[dict], replace: bool = False) -> int:
        """Store items (all or nothing); an existing item_id is an error unless `replace`. Returns the count."""
        now = time.time()
        recs = [_item_row(i, r, now) for i, r in enumerate(rows)]
        ids = [r["item_id"] for r in recs]
        if len(set(ids)) < len(ids):
            twice = next(x for x, n in Counter(ids).items() if n > 1)
            raise StoreError(f"item_id {twice!r} appears more than once in the rows", "item_id")
        with self._write() as conn:
            if not replace:
                taken = self._existing(conn, "items", "item_id", ids)
                if taken:
                    raise StoreError(f"item_id {min(taken)!r} already exists (replace=True overwrites)", "item_id")
                if recs:
                    conn.execute(sa.insert(_items), recs)
            elif recs:
                sets = ", ".join(f"{c} = excluded.{c}" for c in ITEM_COLUMNS.split(", ")[1:])
                conn.execute(sa.text(f"INSERT INTO items ({ITEM_COLUMNS}) VALUES (:item_id, :domain, :title, :fields, "
                                     f":vector, :encoder, :source, :added) ON CONFLICT (item_id) DO UPDATE SET {sets}")
                             .bindparams(sa.bindparam("vector", type_=sa.LargeBinary)), recs)
        return len(recs)

    def get_item(self, item_id: str) -> dict | None:
        rows = self._rows(f"SELECT {ITEM_COLUMNS} FROM items WHERE item_id = ?", (item_id,))
        return _item_dict(rows[0]) if rows else None

    def items(self, source: str | None = None) -> list[dict]:
        """All stored items (or those from `source`), by item_id."""
        where = "" if source is None else "WHERE source = ?"
        return [_item_dict(r) for r in self._rows(f"SELECT {ITEM_COLUMNS} FROM items {where} ORDER BY item_id",
                                                  () if source is None else (source,))]

    def search_items(self, text: str, limit: int = 20) -> list[dict]:
        """Items whose id or title contains `text` (case-insensitive), by item_id."""
        pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        sql = (f"SELECT {ITEM_COLUMNS} FROM items WHERE lower(item_id) LIKE ? ESCAPE '\\' OR lower(title) LIKE ? "
               "ESCAPE '\\' ORDER BY item_id LIMIT ?")
        return [_item_dict(r) for r in self._rows(sql, (pattern, pattern, int(limit)))]

    # -- model versions and update runs ------------------------------------------------------------
    def add_version(self, path: str, events_upto: int, metrics: dict, parent: int | None = None,
                    status: str = "candidate", note: str = "") -> int:
        """Record a model version; returns its number. status="live" retires the previous live one."""
        status = _text(status, "status", "version")
        row = {"path": str(path), "created": time.time(), "events_upto": int(events_upto),
               "metrics": _dumps(metrics or {}, "metrics"), "parent": parent, "status": "candidate", "note": note or ""}
        with self._write() as conn:
            version = conn.execute(sa.insert(_versions).returning(_versions.c.version), row).scalar_one()
            self._set_status(conn, version, status)
        return int(version)

    def versions(self) -> list[dict]:
        """Every version, oldest first: version, path, created, events_upto, metrics, parent, status, note."""
        rows = self._rows("SELECT version, path, created, events_upto, metrics, parent, status, note "
                          "FROM versions ORDER BY version")
        keys = ("version", "path", "created", "events_upto", "metrics", "parent", "status", "note")
        return [{**dict(zip(keys, r)), "metrics": json.loads(r[4])} for r in rows]

    def live_version(self) -> dict | None:
        return next((v for v in self.versions() if v["status"] == "live"), None)

    def set_live(self, version: int) -> None:
        """Make `version` the one live version; the previous live one becomes "retired"."""
        self.set_status(version, "live")

    def set_status(self, version: int, status: str) -> None:
        """Set a version's status ("live" goes through the one-live rule)."""
        status = _text(status, "status", "version")
        with self._write() as conn:
            self._set_status(conn, int(version), status)

    def _set_status(self, conn, version: int, status: str) -> None:
        if conn.execute(sa.select(_versions.c.version).where(_versions.c.version == version)).first() is None:
            raise StoreError(f"unknown model version {version}", "version")
        if status == "live":
            conn.execute(sa.update(_versions).where(_versions.c.status == "live", _versions.c.version != version)
                         .values(status="retired"))
        conn.execute(sa.update(_versions).where(_versions.c.version == version).values(status=status))

    def add_update(self, record: dict) -> int:
        """Record one update run (keys from UPDATE_FIELDS); returns its id."""
        unknown = sorted(set(record) - set(UPDATE_FIELDS))
        if unknown:
            raise StoreError(f"update record: unknown field {unknown[0]!r} (known: {UPDATE_FIELDS})", unknown[0])
        row = {k: record.get(k) for k in UPDATE_FIELDS}
        for k in ("metrics_before", "metrics_after"):
            row[k] = _dumps(row[k] or {}, k)
        with self._write() as conn:
            return int(conn.execute(sa.insert(_updates).returning(_updates.c.id), row).scalar_one())

    def updates(self, limit: int = 50) -> list[dict]:
        """The newest `limit` update runs, newest first (with their "id")."""
        cols = ("id",) + UPDATE_FIELDS
        rows = self._rows(f"SELECT {', '.join(cols)} FROM updates ORDER BY id DESC LIMIT ?", (int(limit),))
        return [{**dict(zip(cols, r)), "metrics_before": json.loads(r[-4]), "metrics_after": json.loads(r[-3])}
                for r in rows]

    # -- API keys ----------------------------------------------------------------------------------
    def create_key(self, name: str, scope: str) -> str:
        """A new key "mk_<id>_<secret>" (shown once; only sha256(secret) is kept). A revoked name is reusable."""
        name = _text(name, "name", "API key")
        if scope not in SCOPES:
            raise StoreError(f"API key: field 'scope' must be one of {SCOPES}, got {scope!r}", "scope")
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        with self._write() as conn:
            old = conn.execute(sa.select(_api_keys.c.revoked).where(_api_keys.c.name == name)).first()
            if old is not None and old[0] is None:
                raise StoreError(f"API key {name!r} exists: revoke it first", "name")
            conn.execute(sa.delete(_api_keys).where(_api_keys.c.name == name))
            conn.execute(sa.insert(_api_keys).values(key_id=key_id, name=name, scope=scope, created=time.time(),
                                                     hash=hashlib.sha256(secret.encode()).hexdigest()))
        return f"mk_{key_id}_{secret}"

    def check_key(self, token: str) -> str | None:
        """The key's scope, or None for a malformed, unknown or revoked token (constant-time hash compare)."""
        parts = token.split("_", 2) if isinstance(token, str) else []
        if len(parts) != 3 or parts[0] != "mk":
            return None
        rows = self._rows("SELECT hash, scope, revoked FROM api_keys WHERE key_id = ?", (parts[1],))
        digest = hashlib.sha256(parts[2].encode("utf-8", "surrogatepass")).hexdigest()
        ok = hmac.compare_digest(digest, rows[0][0] if rows else "0" * 64)
        return rows[0][1] if ok and rows and rows[0][2] is None else None

    def revoke_key(self, name: str) -> None:
        with self._write() as conn:
            if conn.execute(sa.select(_api_keys.c.name).where(_api_keys.c.name == name)).first() is None:
                raise StoreError(f"no API key named {name!r}", "name")
            conn.execute(sa.update(_api_keys).where(_api_keys.c.name == name, _api_keys.c.revoked.is_(None))
                         .values(revoked=time.time()))

    def keys(self) -> list[dict]:
        """Every key's name, scope, created and revoked (None while valid); never the secret."""
        rows = self._rows("SELECT name, scope, created, revoked FROM api_keys ORDER BY name")
        return [dict(zip(("name", "scope", "created", "revoked"), r)) for r in rows]
