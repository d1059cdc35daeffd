"""Virtual keys: secrets are hashed on load and never kept, logged or echoed."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

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
        self._teams = teams or {}
        self._config: dict[bytes, Principal] = {_digest(k.key): self.principal(k) for k in keys}
        self.config_names = frozenset(k.name for k in keys)
        # Keys from the runtime store: digest -> (principal, expiry or None).
        self._stored: dict[bytes, tuple[Principal, float | None]] = {}
        self._admin = _digest(admin_key) if admin_key else None

    def principal(self, k: KeyConfig) -> Principal:
        """What a configured key may do."""
        team = self._teams.get(k.team) if k.team is not None else None
        return Principal(
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

    def set_stored(self, keys: Iterable[tuple[str, KeyConfig, float | None]]) -> None:
        """Replace the runtime-managed keys: (hex digest of the secret, spec, expiry)."""
        self._stored = {
            bytes.fromhex(d): (self.principal(cfg), expires) for d, cfg, expires in keys
        }

    def authenticate(self, secret: str | None) -> Principal:
        """The principal for `secret`, or `AuthenticationError`."""
        if not secret:
            raise AuthenticationError(
                "Missing API key: send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'."
            )
        d = _digest(secret)
        found = self._config.get(d)
        if found is not None:
            return found
        stored = self._stored.get(d)
        if stored is not None:
            principal, expires = stored
            if expires is not None and expires <= time.time():
                raise AuthenticationError("This API key has expired.")
            return principal
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
