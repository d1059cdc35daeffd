"""Everything one gateway process needs, built from a validated config, with a lifecycle.

`Runtime.start()` brings up the simulated providers named in the config, the upstream
connection pool and the ledger writer; `Runtime.close()` flushes the ledger and closes them.
"""

from __future__ import annotations

import asyncio
import gc
import time
from decimal import Decimal
from typing import Any

from tokenway.accounting.ledger import Ledger, open_ledger, read_requests
from tokenway.accounting.prices import PriceBook
from tokenway.accounting.revenue import Plans
from tokenway.auth.keys import KeyStore
from tokenway.config.load import Config
from tokenway.domain.types import ChatRequest
from tokenway.execution.failover import Target
from tokenway.limits.budget import BudgetBook
from tokenway.limits.memory import MemoryLimiter
from tokenway.providers.h1 import H1Pool
from tokenway.providers.upstream import Upstream
from tokenway.telemetry.log import log
from tokenway.telemetry.metrics import Metrics
from tokenway.tokens import count_request

_MILLION = Decimal(1_000_000)


class Runtime:
    """The gateway's collaborators. Built once per process; `start` before serving."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.keys = KeyStore(config.keys, config.raw.admin_key)
        self.limiter = MemoryLimiter()
        self.budgets = BudgetBook(config.keys, warn=_budget_warning)
        self.prices = PriceBook(config.raw.prices)
        self.plans = Plans(config.plans, self.prices)
        self.metrics = Metrics()
        self.ledger: Ledger = open_ledger(config.raw.storage.ledger)
        self.upstreams: dict[str, Upstream] = {}
        self.targets: dict[str, list[Target]] = {}
        self.sims: dict[str, Any] = {}
        self.pool = H1Pool()
        self.ready = False
        self.draining = False
        # pause between fallbacks; routing under SLA replaces this with backoff and budgets
        self.retry_pause = 0.0
        self.started_at = time.time()

    def _seed_budgets(self) -> None:
        # Spend already on the ledger counts against this period's budgets after a restart.
        try:
            url = self.config.raw.storage.ledger
            rows = list(read_requests(url, self.budgets.earliest_period()))
        except FileNotFoundError:
            rows = []
        self.budgets.seed(rows)

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
        self.targets = {
            name: [Target(self.upstreams[t.provider], t.model) for t in m.targets]
            for name, m in self.config.models.items()
        }
        await self.ledger.start()
        if self.budgets.has_any():
            await asyncio.to_thread(self._seed_budgets)
        # Everything built so far (config, price catalog, SDK-sized import graphs) lives as long
        # as the process: move it out of the collector's sight so that the frequent young-
        # generation collections a busy gateway triggers stay cheap.
        gc.collect()
        gc.freeze()
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        await self.ledger.close()
        self.pool.close()
        for sim in self.sims.values():
            await sim.close()


def _budget_warning(key: str, message: str) -> None:
    log.warning("soft budget exceeded", extra={"fields": {"key": key, "detail": message}})
