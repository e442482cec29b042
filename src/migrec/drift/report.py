"""One user's interest report: long/short-term profile and detected migrations, each with the
topics before and after it, printed for a person (`migrec interests` and the demo use it)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detection import MigrationDetector
from .profiles import History, interest_profile, item_factors, user_histories
from .topics import TopicSpace, topic_space

SPACES = ("cf", "text", "topics")    # the vectors the detector reads (see load_space)


@dataclass
class Migration:
    event: int                 # first event of the new regime (alarm event - short + 1)
    alarm: int                 # event at which the alarm fired
    date: str
    before: list[tuple[str, float]]
    after: list[tuple[str, float]]


def _top(dist: np.ndarray, names: list[str], k: int = 3) -> list[tuple[str, float]]:
    return [(names[i], float(dist[i])) for i in np.argsort(-dist)[:k] if dist[i] > 0]


def migrations(history: History, topics: TopicSpace, vectors: np.ndarray, detector: MigrationDetector,
               window: int = 20) -> list[Migration]:
    """Detected migrations of one user, each with the top topics of the `window` events before
    the change point (within the old regime) and of the `window` events from it."""
    rows = topics.one_hot(history.items)
    out, start = [], 0
    for alarm in detector.detect(vectors[history.items]):
        cp = max(alarm - detector.short + 1, 0)
        before = rows[max(start, cp - window):cp]
        after = rows[cp:cp + window]
        ts = history.timestamps[cp]
        date = str(np.datetime64(int(ts), "s").astype("datetime64[D]")) if np.isfinite(ts) else "-"
        out.append(Migration(cp, alarm, date, _top(before.mean(axis=0), topics.names),
                             _top(after.mean(axis=0), topics.names)))
        start = cp
    return out


def _fmt(top: list[tuple[str, float]]) -> str:
    return ", ".join(f"{n} {s:.0%}" for n, s in top)


def describe(history: History, topics: TopicSpace, vectors: np.ndarray, detector: MigrationDetector,
             short_half_life: float = 10.0) -> list[Migration]:
    """Print profile and migrations of one user; returns the migrations."""
    prof = interest_profile(history, topics, short_half_life=short_half_life)
    print(f"User {history.user}: {len(history)} events, interest space = {topics.kind} ({topics.n_topics} topics)")
    print(f"  {'long-term (all events weigh the same):':<42} {_fmt(prof.top('long'))}")
    print(f"  {f'short-term (half-life {short_half_life:g} events):':<42} {_fmt(prof.top('short'))}")
    found = migrations(history, topics, vectors, detector)
    print(f"  migrations detected: {len(found)} (threshold {detector.threshold_:.2f}, calibrated to "
          f"{detector.false_alarm:.0%} false alarms on time-shuffled histories)")
    for m in found:
        print(f"    event {m.event:4d} ({m.date}, alarm at event {m.alarm}): {_fmt(m.before)}  ->  {_fmt(m.after)}")
    return found


def load_space(dataset: str, path: str | None, space: str = "cf", encoder: str = "st", cache=None):
    """Histories, topics and the per-event vector space used by the detector."""
    from .. import pipeline
    from ..encoders import encode_catalogue

    ds = pipeline.load_dataset(dataset, path)
    timed = ds.interactions.dropna(subset=["timestamp"])
    if timed.empty:
        raise ValueError(f"{dataset}: no event has a timestamp; interest migration needs time order")
    hist = user_histories(timed, ds.catalogue)
    if space not in SPACES:
        raise ValueError(f"unknown interest space {space!r}; choose from {SPACES}")
    text = None
    if space == "text" or "category" not in ds.catalogue.columns:
        text = encode_catalogue(ds.catalogue, encoder, cache_dir=pipeline.cache_dir_for(cache))
    topics = topic_space(ds.catalogue, text)
    if space == "cf":
        dim = min(32, len(hist) - 1, len(ds.catalogue) - 1)
        vectors = item_factors(hist.values(), len(ds.catalogue), dim=dim)
    elif space == "text":
        vectors = text
    else:
        vectors = topics.item_topics
    return ds, hist, topics, vectors


def user_report(history: History, topics: TopicSpace, vectors: np.ndarray, short: int = 10, long: int = 50,
                false_alarm: float = 0.05, plot=None, every: int = 10, title: str | None = None) -> list[Migration]:
    """Profile and migrations of one user, with the detector calibrated on this user's own events
    shuffled in time (the null is "same tastes, no order"); draws the timeline to `plot` if given.
    ValueError when the history is too short to detect anything."""
    need = short + min(20, long)
    if len(history) < need:
        raise ValueError(f"user {history.user} has {len(history)} events; migration detection needs at least {need}")
    det = MigrationDetector(short=short, long=long, min_history=min(20, long),
                            false_alarm=false_alarm, n_null=200).fit([vectors[history.items]])
    found = describe(history, topics, vectors, det)
    if plot:
        from .plots import plot_timeline

        plot_timeline(topics.one_hot(history.items), topics.names, [m.event for m in found], plot,
                      every=every, title=title or f"user {history.user}: interests over time")
        print(f"wrote {plot}")
    return found


def demo_section(data=None, max_events: int = 300) -> str:
    """The demo's drift part: the ML-100K user (<= max_events events) whose history has the
    strongest detected migration (largest alarm score / threshold); prints it, returns the id."""
    _, hist, topics, vectors = load_space("ml-100k", data, "cf")
    first = [vectors[h.items[:80]] for h in hist.values() if len(h) >= 80]
    det = MigrationDetector().fit(first)      # population calibration: fast, one threshold for all
    best, strength = None, 0.0
    for user, h in hist.items():
        if len(h) > max_events:
            continue
        s = det.scores(vectors[h.items])
        alarms = det.detect(vectors[h.items])
        if alarms and np.nanmax(s[alarms]) / det.threshold_ > strength:
            best, strength = user, float(np.nanmax(s[alarms]) / det.threshold_)
    if best is None:
        print("no migration detected in any ML-100K history")
        return ""
    print(f"\n[interest migration] user whose interests moved most clearly (alarm score {strength:.1f}x "
          f"the 5% threshold):")
    describe(hist[best], topics, vectors, det)
    return best
