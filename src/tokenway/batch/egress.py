"""Where webhooks may go: public addresses only, unless the operator allows private ones.

A webhook URL is the client's, and the gateway POSTs to it from inside the operator's network;
without a check, any key could make the gateway call its neighbours (metadata services, admin
ports, databases on loopback). Two checks, because DNS can answer differently later than at
submission: an IP literal is judged when the task is submitted, and every name is judged again
by its resolved addresses when a delivery connects (`PublicResolver`), so a name that resolves
to a private address then is refused then.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = ["PublicResolver", "is_public", "private_literal"]


def is_public(address: str) -> bool:
    """Whether `address` (an IP literal) is a globally routable unicast address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def private_literal(host: str) -> bool:
    """Whether `host` is an IP literal that is not public (names are judged on delivery)."""
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        return False
    return not is_public(bare)


class PublicResolver(AbstractResolver):
    """Resolves names as aiohttp does, keeping public addresses only; a name with none left
    fails to connect, as a name that does not resolve would."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [r for r in found if is_public(r["host"])]
        if not public:
            raise OSError(f"{host} resolves to no public address")
        return public

    async def close(self) -> None:
        await self._inner.close()
