"""Key management over HTTP (the admin key only), without a restart:

    GET    /admin/keys                 config keys and stored keys (never a secret)
    POST   /admin/keys                 create {"name", "expires_in_s"?, limits}: the secret, once
    PATCH  /admin/keys/NAME            replace a stored key's limits, budget, models...
    POST   /admin/keys/NAME/rotate     a new secret; the old one stops working
    DELETE /admin/keys/NAME            revoke
    GET    /admin/audit                every change: who, what, when

Changes are written to the store beside the ledger (SQLite, or PostgreSQL shared by every
replica) and its audit log; this replica reloads at once, the others within a second.
Config-file keys are listed but cannot be changed here. While the store cannot be reached
these endpoints answer 503 (and the gateway keeps serving the keys it has loaded).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from tokenway.auth.store import KeyExists, KeySpec, NoSuchKey
from tokenway.errors import BadRequest, NotFound, PermissionDenied, TokenwayError
from tokenway.runtime import Runtime
from tokenway.store import StoreUnavailable

ACTOR = "admin-api"
T = TypeVar("T")


class KeyStoreDown(TokenwayError):
    """The key store cannot be reached: 503, worth retrying; nothing was changed."""

    status = 503
    error_type = "api_error"
    flag = "STORE"
    retry_after_s = 1.0


async def _store(fn: Callable[..., T], *args: Any) -> T:
    try:
        return await asyncio.to_thread(fn, *args)
    except StoreUnavailable:
        raise KeyStoreDown(
            "The key store is unavailable; retry shortly.", code="store_unavailable"
        ) from None


class CreateKey(KeySpec, kw_only=True, forbid_unknown_fields=True):
    name: str
    expires_in_s: float | None = None


def _spec(body: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"Invalid key: {exc}") from None
    except msgspec.DecodeError:
        raise BadRequest("Request body is not valid JSON.") from None


def _check(rt: Runtime, spec: KeySpec) -> None:
    for m in spec.models or []:
        if m not in rt.config.models:
            raise BadRequest(f"models: unknown model {m!r}", param="models")
    if spec.plan is not None and spec.plan not in rt.config.plans:
        raise BadRequest(f"plan: unknown plan {spec.plan!r}", param="plan")
    if spec.priority not in ("high", "normal", "low"):
        raise BadRequest("priority: one of high, normal, low", param="priority")
    if spec.budget_period not in ("total", "day", "month"):
        raise BadRequest("budget_period: one of total, day, month", param="budget_period")


async def handle(rt: Runtime, method: str, path: str, body: bytes) -> tuple[int, Any]:
    """(status, JSON document) for a key-management request."""
    store = rt.key_store
    if method == "GET" and path == "/admin/keys":
        config = [
            {
                "name": k.name,
                "team": k.team,
                "models": k.models,
                "rpm": k.rpm,
                "tpm": k.tpm,
                "budget_usd": k.budget_usd,
                "source": "config",
            }
            for k in rt.config.keys
        ]
        stored = [k.public() for k in await _store(store.load)]
        return 200, {"data": config + stored}
    if method == "GET" and path == "/admin/audit":
        return 200, {"data": await _store(store.audit)}
    name, _, verb = path[len("/admin/keys/") :].partition("/")
    if path.startswith("/admin/keys/") and name in rt.keys.config_names:
        raise PermissionDenied(f"'{name}' is a config-file key: change it in the config.")
    try:
        if method == "POST" and path == "/admin/keys":
            req = _spec(body, CreateKey)
            if not req.name or req.name in rt.keys.config_names:
                raise BadRequest(f"name: {req.name!r} is empty or taken by a config key")
            spec = KeySpec(**{f: getattr(req, f) for f in KeySpec.__struct_fields__})
            _check(rt, spec)
            expires = time.time() + req.expires_in_s if req.expires_in_s else None
            key, secret = await _store(store.create, req.name, spec, ACTOR, expires)
            # the key exists now: a reload that fails must not cost the client its secret
            # (only logged; the poller catches up)
            await rt.refresh_keys()
            return 201, {"key": key.public(), "secret": secret}
        if method == "POST" and verb == "rotate":
            secret = await _store(store.rotate, name, ACTOR)
            await rt.refresh_keys()
            return 200, {"name": name, "secret": secret}
        if method == "PATCH" and name and not verb:
            spec = _spec(body, KeySpec)
            _check(rt, spec)
            await _store(store.update, name, spec, ACTOR)
            await rt.refresh_keys()
            return 200, {"name": name, "spec": msgspec.structs.asdict(spec)}
        if method == "DELETE" and name and not verb:
            await _store(store.revoke, name, ACTOR)
            await rt.refresh_keys()
            return 200, {"name": name, "revoked": True}
    except KeyExists as exc:
        raise BadRequest(str(exc), code="key_exists") from None
    except NoSuchKey:
        raise NotFound(f"No stored key named {name!r}.") from None
    raise NotFound(f"Unknown endpoint: {method} {path}")
