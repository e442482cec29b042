"""Several data sets (domains, platforms) as one multi-domain data set.

Item ids must be unique across the parts (a clash is an error, never a silent merge);
user ids are shared: the same id in two parts is the same person, which is what makes
overlapping users, and so cross-domain transfer, possible.
"""
from __future__ import annotations

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
    for ds in datasets:  # keep what a part's loader said about held-out users
        if "heldout_users" in ds.meta:
            meta.setdefault("heldout_users", {}).update(ds.meta["heldout_users"])
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
