"""An upstream provider as the gateway sees it: adapter, credentials and the HTTP send."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tokenway.config.schema import ProviderConfig
from tokenway.errors import UpstreamConnectError, UpstreamStatus
from tokenway.providers.adapters import Adapter, Native, Prepared, make_adapter, native_adapters
from tokenway.providers.credentials import KeyPool
from tokenway.providers.h1 import H1Pool, H1Response
from tokenway.providers.transport import map_exception, raise_for_status
from tokenway.telemetry.log import redact


class Upstream:
    """One configured provider. `send` returns an open response with a 2xx status or raises an
    `UpstreamError`; the caller reads (and releases) the response."""

    def __init__(self, cfg: ProviderConfig, base_url: str, pool: H1Pool) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.kind = cfg.kind
        self.region = cfg.region
        self.base_url = base_url
        """The resolved base URL (a `sim://` one made the simulator's address)."""
        resolved = cfg if base_url == cfg.base_url else _with_base(cfg, base_url)
        self.adapter: Adapter = make_adapter(resolved)
        # client protocol -> the adapter relaying it untranslated (its kind's, and Responses
        # where the provider says it serves them)
        self.native: dict[str, Native] = native_adapters(resolved, self.adapter)
        keys = (
            cfg.api_key if isinstance(cfg.api_key, list) else ([cfg.api_key] if cfg.api_key else [])
        )
        self.keys = KeyPool(keys)
        self._pool = pool
        # Told every answer's status and headers (rate-limit headroom is learned from them).
        self.on_answer: Callable[[str, int, Mapping[str, str]], None] | None = None

    async def send(self, prep: Prepared, label: str = "") -> H1Response:
        """POST a prepared request with the next usable key.

        A key the provider refuses (401, 403) or throttles (429) is rested and the request goes
        out again with the next key, while untried keys remain. `label` names the target for
        `on_answer`.
        """
        tries = max(1, len(self.keys))
        for n in range(tries):
            index, key = self.keys.pick()
            headers = prep.headers
            if key is not None:
                headers = {**headers, **self.adapter.auth_headers(key)}
            try:
                # Redirects are never followed: they would carry the key to another origin.
                resp = await self._pool.post(
                    prep.url,
                    prep.body,
                    headers,
                    connect_timeout=self.cfg.connect_timeout_s,
                    read_timeout=self.cfg.timeout_s,
                )
            except (TimeoutError, OSError, ValueError) as exc:
                raise map_exception(exc) from None
            if self.on_answer is not None and label:
                self.on_answer(label, resp.status, resp.headers)
            if resp.status < 300:
                return resp
            try:
                if resp.status < 400:
                    raise UpstreamConnectError(f"upstream answered {resp.status} (a redirect)")
                await raise_for_status(resp)
            except UpstreamStatus as err:
                self._scrub(err)
                if err.upstream_status in (401, 403, 429) and len(self.keys) > 1:
                    self.keys.rest(index, err.retry_after_s)
                    if n + 1 < tries:
                        continue
                raise
            finally:
                resp.release()
        raise AssertionError("unreachable")  # pragma: no cover

    def _scrub(self, err: UpstreamStatus) -> None:
        """Keep the provider's words but never our credentials, which some providers echo."""
        if err.upstream_status in (401, 403):
            err.message = f"provider {self.name!r} refused the gateway's credentials"
            return
        for key in self.keys.values():
            if key and key in err.message:
                err.message = err.message.replace(key, "[redacted]")
        err.message = redact(err.message)


def _with_base(cfg: ProviderConfig, base_url: str) -> ProviderConfig:
    import msgspec

    return msgspec.structs.replace(cfg, base_url=base_url)
