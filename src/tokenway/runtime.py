"""Everything one gateway process needs, built from a validated config, with a lifecycle.

`Runtime.start()` brings up the simulated providers named in the config, the upstream
connection pool and the ledger writer; `Runtime.close()` flushes the ledger and closes them.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

from tokenway.accounting.ledger import Ledger, open_ledger, read_spend
from tokenway.accounting.prices import PriceBook
from tokenway.accounting.revenue import Plans
from tokenway.auth.keys import KeyStore
from tokenway.auth.store import open_key_store
from tokenway.config.load import Config
from tokenway.config.schema import HedgeConfig, KeyConfig, ModelConfig, TargetConfig
from tokenway.domain.types import ChatRequest
from tokenway.execution.failover import Target
from tokenway.limits.budget import BudgetBook
from tokenway.limits.memory import MemoryLimiter
from tokenway.limits.priority import PriorityGate
from tokenway.limits.state import MemoryState, State
from tokenway.providers.h1 import H1Pool
from tokenway.providers.upstream import Upstream
from tokenway.routing.router import Route
from tokenway.routing.state import RoutingState
from tokenway.store import StoreUnavailable
from tokenway.telemetry.log import log
from tokenway.telemetry.metrics import Metrics
from tokenway.tokens import count_request

if TYPE_CHECKING:
    from tokenway.store.responses import ResponseStore

_MILLION = Decimal(1_000_000)


class Runtime:
    """The gateway's collaborators. Built once per process; `start` before serving."""

    def __init__(self, config: Config, workers: int = 1) -> None:
        self.config = config
        self.keys = KeyStore(config.keys, config.raw.admin_key, config.teams)
        self.limiter = MemoryLimiter()
        self.metrics = Metrics()
        # Wall-clock time in epoch seconds: request timestamps, the prices in force and budget
        # periods all read it, so a test or a replay can run a day of traffic in seconds.
        self.now: Callable[[], float] = time.time
        self.budgets = BudgetBook(
            config.keys,
            config.raw.teams,
            clock=lambda: datetime.fromtimestamp(self.now(), UTC),
            warn=self._budget_warning,
        )
        self.state = self._make_state(workers)
        self.prices = PriceBook(config.raw.prices, fx=config.raw.fx)
        self.plans = Plans(config.plans, self.prices)
        self.ledger: Ledger = open_ledger(config.raw.storage.ledger)
        self.upstreams: dict[str, Upstream] = {}
        # Each model's default targets, and its routes: by task class, None for the default.
        self.targets: dict[str, list[Target]] = {}
        self.routes: dict[str, dict[str | None, Route]] = {}
        self.routing = RoutingState(config.raw.routing, self.metrics)
        self.gates: dict[str, PriorityGate] = {}
        self.key_store = open_key_store(config.raw.storage.ledger)
        self._responses: ResponseStore | None = None
        self._keys_version = -1
        self._keys_lock = asyncio.Lock()
        self._keys_down = False  # the store failed the last poll: logged once per outage
        self._stored_keys = 0
        self._keys_task: asyncio.Task[None] | None = None
        self.shared_routing: Any = None
        self.sims: dict[str, Any] = {}
        self.pool = H1Pool()
        self.ready = False
        self.draining = False
        self.started_at = time.time()

    @property
    def responses(self) -> ResponseStore:
        """Stored Responses API responses (previous_response_id), on the store beside the
        ledger. Built on first use: the store's imports (asyncpg) stay out of start-up."""
        if self._responses is None:
            from tokenway.store.responses import ResponseStore

            st = self.config.raw.storage
            self._responses = ResponseStore(
                st.ledger, st.responses_retention_days * 86400.0, clock=lambda: self.now()
            )
        return self._responses

    async def reload_keys(self) -> None:
        """Load runtime-managed keys if the store changed (every replica polls each second).
        Raises what the store raises (`StoreUnavailable` when it is down); the keys loaded
        before stay in force."""
        # one reload at a time: a slow poll finishing after an admin write's reload would
        # otherwise put back the keys from before the write
        async with self._keys_lock:
            await self._reload_keys()

    async def refresh_keys(self) -> None:
        """`reload_keys`, but a store that fails only logs: once when the outage starts and
        once when it ends, with no secret and no URL."""
        try:
            await self.reload_keys()
        except Exception as exc:
            self._keys_failed(exc)
            return
        if self._keys_down:
            self._keys_down = False
            log.warning("key store reachable again: keys reloaded")

    def _keys_failed(self, exc: Exception) -> None:
        if self._keys_down:
            return
        self._keys_down = True
        fields = {"error": type(exc).__name__, "stored_keys": self._stored_keys}
        if isinstance(exc, StoreUnavailable):
            log.warning(
                "key store unavailable: serving with the keys already loaded",
                extra={"fields": fields},
            )
        else:  # not an outage but a fault: its traceback helps
            log.error("could not reload keys", exc_info=exc, extra={"fields": fields})

    async def _reload_keys(self) -> None:
        store = self.key_store
        version = await asyncio.to_thread(store.version)
        if version == self._keys_version:
            return
        stored = await asyncio.to_thread(store.load)
        now = time.time()
        entries = []
        for k in stored:
            if not k.active(now) or k.name in self.keys.config_names:
                continue
            cfg = msgspec.convert(
                {"name": k.name, "key": "", **msgspec.structs.asdict(k.spec)}, KeyConfig
            )
            self.budgets.set_key(cfg)
            entries.append((k.digest, cfg, k.expires_at))
        self.keys.set_stored(entries)
        self._stored_keys = len(entries)
        self._keys_version = version

    async def _poll_keys(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.refresh_keys()

    def _make_state(self, workers: int) -> State:
        st = self.config.raw.storage
        if st.state.startswith(("redis://", "rediss://", "unix://")):
            from tokenway.limits.redis_state import RedisState

            return RedisState(
                st.state,
                self.budgets,
                prefix=st.state_prefix,
                timeout_s=st.state_timeout_ms / 1000.0,
                policy=st.state_failure,
                share=1.0 / max(1, st.replicas * workers),
                warn=self._budget_warning,
            )
        return MemoryState(self.limiter, self.budgets)

    def _seed_budgets(self) -> None:
        # Spend already on the ledger counts against this period's budgets after a restart.
        url = self.config.raw.storage.ledger
        try:
            rows = list(read_spend(url, self.budgets.earliest_period()))
        except FileNotFoundError:
            rows = []
        except Exception as exc:  # a ledger that is down must not stop serving
            # PostgreSQL unreachable at start: serve with budgets counted from zero (logged, so
            # an operator sees the window in which a budget may be overspent) rather than not
            # at all; rows written meanwhile still reach the ledger through the spool.
            log.warning(
                "budgets not seeded from the ledger",
                extra={"fields": {"error": type(exc).__name__}},
            )
            rows = []
        self.state.seed(rows)

    def _route(
        self,
        targets: list[TargetConfig],
        policy: str,
        timeout_ms: int | None,
        model: ModelConfig,
        hedge: HedgeConfig | None,
    ) -> Route:
        built = []
        for t in targets:
            target = Target(
                self.upstreams[t.provider],
                t.model,
                weight=t.weight,
                context_window=t.context_window,
                capabilities=frozenset(t.capabilities) if t.capabilities is not None else None,
            )
            if t.limits is not None:
                self.routing.headroom.configure(target.label, t.limits.rpm, t.limits.tpm)
            built.append(target)
        ms = timeout_ms if timeout_ms is not None else self.config.raw.routing.timeout_ms
        return Route(built, policy, ms / 1000.0, model.context_window, hedge)

    def expected_cost(
        self, t: Target, hit_rate: float, prompt: int, output: int, mode: str = "realtime"
    ) -> Decimal | None:
        """What a request in `mode` is expected to cost at `t`, with `hit_rate` of its prompt
        cached."""
        price = self.prices.price(t.upstream.name, t.model, mode=mode, batch_api=False)
        if price is None:
            return None
        p = price.for_prompt(prompt)
        cached = Decimal(str(hit_rate)) * prompt
        return ((prompt - cached) * p.input + cached * p.cache_read + output * p.output) / _MILLION

    def _budget_warning(self, account: str, message: str) -> None:
        # A soft budget admits the request; the operator hears of it once per period.
        scope = "end_user" if "/user:" in account else account.split(":", 1)[0]
        self.metrics.budget_warnings.labels(scope).inc()
        log.warning(
            "soft budget exceeded", extra={"fields": {"account": account, "detail": message}}
        )

    def worst_case_usd(self, targets: list[Target], prompt: int, output: int) -> Decimal:
        """The most a request could cost: its prompt and full output at the dearest target."""
        worst = Decimal(0)
        for t in targets:
            price = self.prices.price(t.upstream.name, t.model)
            if price is not None:
                tier = price.for_prompt(prompt)
                worst = max(worst, (prompt * tier.input + output * tier.output) / _MILLION)
        return worst

    def estimate_prompt(self, req: ChatRequest) -> int:
        """Prompt tokens of a request by the offline tokenizer."""
        return count_request(req)

    async def start(self) -> None:
        if self.config.raw.sim:
            from tokenway.sim import start_sims

            self.sims = await start_sims(self.config.raw.sim)
        for name, p in self.config.providers.items():
            base = p.base_url
            if base.startswith("sim://"):
                base = self.sims[base[6:]].base_url
            self.upstreams[name] = Upstream(p, base, self.pool)
            self.upstreams[name].on_answer = self.routing.headroom.observe
            if p.limits is not None:
                self.routing.headroom.configure(name, p.limits.rpm, p.limits.tpm)
        for name, m in self.config.models.items():
            self.routes[name] = {None: self._route(m.targets, m.policy, m.timeout_ms, m, m.hedge)}
            for task, tr in m.tasks.items():
                self.routes[name][task] = self._route(
                    tr.targets,
                    tr.policy or m.policy,
                    tr.timeout_ms or m.timeout_ms,
                    m,
                    tr.hedge if tr.hedge is not None else m.hedge,
                )
            self.targets[name] = self.routes[name][None].targets
            if m.capacity is not None:
                c = m.capacity
                self.gates[name] = PriorityGate(c.max_in_flight, c.queue, c.max_wait_ms / 1000)
        await self.ledger.start()
        await self.state.start()
        try:
            await self.reload_keys()
        except StoreUnavailable as exc:
            # serve with the config keys; the poller picks the stored ones up when it can
            self._keys_failed(exc)
        self._keys_task = asyncio.create_task(self._poll_keys())
        st = self.config.raw.storage
        if st.state.startswith(("redis://", "rediss://", "unix://")):
            from tokenway.routing.shared import SharedRouting

            labels = [
                t.label
                for by_task in self.routes.values()
                for r in by_task.values()
                for t in r.targets
            ]
            self.shared_routing = SharedRouting(st.state, st.state_prefix, self.routing, labels)
            await self.shared_routing.start()
        if self.budgets.has_any():
            await asyncio.to_thread(self._seed_budgets)
            seed = getattr(self.state, "seed_async", None)
            if seed is not None:
                await seed()
        # Everything built so far (config, price catalog, SDK-sized import graphs) lives as long
        # as the process: move it out of the collector's sight so that the frequent young-
        # generation collections a busy gateway triggers stay cheap.
        gc.collect()
        gc.freeze()
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        if self._keys_task is not None:
            self._keys_task.cancel()
        # waits for a poll still in its thread, so no call outlives the store's connections
        await asyncio.to_thread(self.key_store.close)
        await self.ledger.close()
        await self.state.close()
        if self.shared_routing is not None:
            await self.shared_routing.close()
        self.pool.close()
        if self._responses is not None:
            await asyncio.to_thread(self._responses.close)
        for sim in self.sims.values():
            await sim.close()
