"""Virtual keys: secrets are hashed on load and never kept, logged or echoed."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from tokenway.config.schema import KeyConfig, TeamConfig
from tokenway.domain.types import Principal
from tokenway.errors import AuthenticationError


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


class KeyStore:
    """Looks a presented secret up by its SHA-256 digest."""

    def __init__(
        self,
        keys: list[KeyConfig],
        admin_key: str | None = None,
        teams: Mapping[str, TeamConfig] | None = None,
    ) -> None:
        self._by_digest: dict[bytes, Principal] = {}
        for k in keys:
            team = (teams or {}).get(k.team) if k.team is not None else None
            self._by_digest[_digest(k.key)] = Principal(
                name=k.name,
                team=k.team,
                models=frozenset(k.models) if k.models is not None else None,
                rpm=k.rpm,
                tpm=k.tpm,
                budget_usd=k.budget_usd,
                # A key's own plan wins over its team's.
                plan=k.plan if k.plan is not None else (team.plan if team else None),
                regions=frozenset(k.regions) if k.regions is not None else None,
                priority=k.priority,
            )
        self._admin = _digest(admin_key) if admin_key else None

    def authenticate(self, secret: str | None) -> Principal:
        """The principal for `secret`, or `AuthenticationError`."""
        if not secret:
            raise AuthenticationError(
                "Missing API key: send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'."
            )
        d = _digest(secret)
        found = self._by_digest.get(d)
        if found is not None:
            return found
        if self._admin is not None and hmac.compare_digest(d, self._admin):
            return Principal(name="admin", admin=True)
        raise AuthenticationError("Invalid API key.")


def secret_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The secret a client presented, from either header the SDKs use."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None
