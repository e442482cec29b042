"""Several data sets (domains, platforms) as one multi-domain data set.

Item ids must be unique across the parts (a clash is an error, never a silent merge);
user ids are shared: the same id in two parts is the same person, which is what makes
overlapping users, and so cross-domain transfer, possible.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .schema import DOMAIN, ITEM, USER, DataError, Dataset


def combine(*datasets: Dataset, name: str | None = None, user_prefixes: list[str] | None = None) -> Dataset:
    """One Dataset holding every part's interactions and catalogue; each part keeps its domains.

    user_prefixes: optional per-part prefixes ("a:", "b:") for parts whose user ids do
    NOT refer to the same people.
    """
    if len(datasets) < 2:
        raise ValueError("combine needs at least two data sets")
    if user_prefixes is not None and len(user_prefixes) != len(datasets):
        raise ValueError(f"{len(user_prefixes)} user prefixes for {len(datasets)} data sets")
    seen: dict[str, str] = {}
    logs, catalogues = [], []
    for k, ds in enumerate(datasets):
        for item in ds.catalogue[ITEM]:
            if item in seen:
                raise DataError(f"item id {item!r} is in both {seen[item]!r} and {ds.name!r}; item ids "
                                f"must be unique across domains", file=ds.name, field=ITEM)
            seen[item] = ds.name
        log = ds.interactions
        if user_prefixes is not None:
            log = log.assign(**{USER: user_prefixes[k] + log[USER].astype(str)})
        logs.append(log)
        catalogues.append(ds.catalogue)
    meta = {"parts": {ds.name: ds.domains for ds in datasets}}
    for ds in datasets:  # keep what every part's loader said about held-out users (lists joined)
        for part, users in (ds.meta.get("heldout_users") or {}).items():
            meta.setdefault("heldout_users", {}).setdefault(part, []).extend(users)
    catalogue = pd.concat(catalogues, ignore_index=True).fillna({c: "" for c in _text_columns(catalogues)})
    return Dataset(pd.concat(logs, ignore_index=True), catalogue,
                   name or "+".join(ds.name for ds in datasets), meta)


def _text_columns(catalogues) -> list[str]:
    cols = set().union(*(c.columns for c in catalogues))
    return sorted(c for c in cols if c not in (ITEM, DOMAIN))


def overlapping_users(dataset: Dataset, domains: list[str]) -> list[str]:
    """Users with at least one event in every one of `domains`."""
    inter = dataset.interactions
    per_domain = [set(inter.loc[inter[DOMAIN] == d, USER]) for d in domains]
    return sorted(set.intersection(*per_domain)) if per_domain else []


def _single_domain_users(inter: pd.DataFrame) -> dict[str, np.ndarray]:
    """Users whose every event is in one domain, per domain (sorted; users of several domains left out)."""
    span = inter.groupby(USER, sort=True)[DOMAIN].agg(["first", "nunique"])
    single = span[span["nunique"] == 1]
    return {d: np.asarray(sorted(users.astype(str)), dtype=object)
            for d, users in single.groupby("first").groups.items()}


def sample_users(dataset: Dataset, per_domain: int, domains: list[str] | None = None, seed: int = 0,
                 keep_unused_items: bool = False) -> Dataset:
    """At most `per_domain` users of each of `domains` (all by default), drawn uniformly with `seed`.

    For pre-training on many domains without one large domain outweighing the rest. Users with
    events in several domains are never drawn (drawing them for one domain would add events of
    another); events of domains not named stay as they are. Catalogue items left without events
    in a named domain are dropped unless `keep_unused_items`. Held-out users named in the meta
    that were not drawn are dropped from it.
    """
    if per_domain < 1:
        raise ValueError(f"per_domain must be >= 1, not {per_domain}")
    inter = dataset.interactions
    present = sorted(inter[DOMAIN].astype(str).unique())
    names = present if domains is None else list(domains)
    unknown = sorted(set(names) - set(present))
    if unknown:
        raise ValueError(f"no events in domain(s) {unknown}; the data set has {present}")
    rng = np.random.default_rng(seed)
    by_domain = _single_domain_users(inter)
    keep = []
    for d in names:
        users = by_domain.get(d, np.array([], dtype=object))
        keep.append(users if len(users) <= per_domain else np.sort(rng.choice(users, per_domain, replace=False)))
    in_named = inter[DOMAIN].astype(str).isin(names).to_numpy()
    kept = inter[~in_named | inter[USER].astype(str).isin(np.concatenate(keep)).to_numpy()].reset_index(drop=True)
    catalogue = dataset.catalogue
    if not keep_unused_items:
        used = set(kept[ITEM])
        catalogue = catalogue[~catalogue[DOMAIN].astype(str).isin(names) | catalogue[ITEM].isin(used)]
    meta = dict(dataset.meta)
    if "heldout_users" in meta:
        users = set(kept[USER])
        meta["heldout_users"] = {k: [u for u in v if u in users] for k, v in meta["heldout_users"].items()}
    meta["sampled_users"] = {"per_domain": per_domain, "domains": names, "seed": seed}
    return Dataset(kept, catalogue.reset_index(drop=True), dataset.name, meta)


def hold_out_users(dataset: Dataset, domains: list[str], valid: int, test: int = 0, seed: int = 0,
                   min_events: int = 2) -> Dataset:
    """Name held-out users (``meta["heldout_users"]``) in each of `domains`: they never train, and
    their last event is a validation (or test) target (see transfer.make_task).

    Lets a domain that is only a pre-training source early-stop its model on cases that are not in
    the training data. Users are drawn uniformly with `seed` among those with >= `min_events` events,
    all in that one domain; held-out users the meta already names are kept.
    """
    if valid < 0 or test < 0 or valid + test == 0:
        raise ValueError(f"hold out at least one user: valid={valid}, test={test}")
    inter = dataset.interactions
    counts = inter.groupby(USER).size()
    by_domain = _single_domain_users(inter)
    rng = np.random.default_rng(seed)
    held = {k: list(v) for k, v in (dataset.meta.get("heldout_users") or {}).items()}
    for d in domains:
        users = [u for u in by_domain.get(d, []) if counts[u] >= min_events]
        if len(users) < valid + test:
            raise ValueError(f"domain {d!r} has {len(users)} users with >= {min_events} events, "
                             f"fewer than the {valid + test} to hold out")
        drawn = rng.permutation(np.asarray(users, dtype=object))[: valid + test]
        held.setdefault("valid", []).extend(drawn[:valid].tolist())
        held.setdefault("test", []).extend(drawn[valid:].tolist())
    return Dataset(inter, dataset.catalogue, dataset.name, {**dataset.meta, "heldout_users": held})
