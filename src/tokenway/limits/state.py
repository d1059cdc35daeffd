"""The one `state` interface the gateway admits requests through: per-key rate limits (RPM,
TPM) and spend budgets, each a borrow (reserve at admission, settle with the actual figure).

`MemoryState` keeps everything in this process (the embedded default). `RedisState`
(limits/redis_state.py) keeps it on a Redis server shared by every replica, each operation one
atomic server-side script.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Protocol

from tokenway.domain.types import Principal
from tokenway.limits.budget import BudgetBook, Payer
from tokenway.limits.memory import Headroom, MemoryLimiter


class State(Protocol):
    """Admission state. `admit_*` raise `RateLimited` / `BudgetExceeded`; `settle_*` never
    raise. What an `admit_*` returns is opaque and goes back to its `settle_*`."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def admit_rate(self, p: Principal, est_tokens: int) -> tuple[Headroom, Any]: ...

    async def settle_rate(self, p: Principal, held: Any, actual_tokens: int) -> None: ...

    def covers(self, payer: Payer) -> bool: ...

    async def admit_budget(self, payer: Payer, worst_case: Decimal) -> Any: ...

    async def settle_budget(self, holds: Any, actual: Decimal) -> None: ...

    def seed(self, rows: Iterable[dict[str, Any]]) -> None: ...


class MemoryState:
    """Limits and budgets of this process alone."""

    def __init__(self, limiter: MemoryLimiter, budgets: BudgetBook) -> None:
        self.limiter, self.budgets = limiter, budgets

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def admit_rate(self, p: Principal, est_tokens: int) -> tuple[Headroom, Any]:
        return self.limiter.admit(p, est_tokens)

    async def settle_rate(self, p: Principal, held: Any, actual_tokens: int) -> None:
        self.limiter.settle(p, held, actual_tokens)

    def covers(self, payer: Payer) -> bool:
        return self.budgets.covers(payer)

    async def admit_budget(self, payer: Payer, worst_case: Decimal) -> Any:
        return self.budgets.admit(payer, worst_case)

    async def settle_budget(self, holds: Any, actual: Decimal) -> None:
        self.budgets.settle(holds or (), actual)

    def seed(self, rows: Iterable[dict[str, Any]]) -> None:
        self.budgets.seed(rows)
