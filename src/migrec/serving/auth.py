"""API keys: writes and admin calls carry `X-API-Key`; reads only when the service asks for it.

Keys are made by `migrec keys create` (or `Store.create_key`), kept hashed in the store, and
shown once. Scopes: "write" (events, items, deleting a user) and "admin" (also updates and
rollback); an admin key may do anything a write key may.
"""
from __future__ import annotations

from fastapi import HTTPException

HEADER = "X-API-Key"
RANKS = {"read": 0, "write": 1, "admin": 2}


def authorise(store, token: str | None, needed: str, enabled: bool = True) -> str:
    """The caller's scope, or an HTTPException: 401 without a valid key, 403 when its scope is too low."""
    if not enabled:
        return "admin"
    if not token:
        raise HTTPException(401, f"this call needs an API key with scope {needed!r} in the {HEADER} header",
                            headers={"WWW-Authenticate": HEADER})
    scope = store.check_key(token)
    if scope is None:
        raise HTTPException(401, f"the {HEADER} header holds an unknown or revoked key",
                            headers={"WWW-Authenticate": HEADER})
    if RANKS.get(scope, -1) < RANKS[needed]:
        raise HTTPException(403, f"this call needs scope {needed!r}; the key has {scope!r}")
    return scope
