"""Pin the public API of tokenway.accounting: changing it should be a deliberate act."""

from __future__ import annotations

import inspect

from tokenway.accounting import export, ledger, prices


def test_exported_members() -> None:
    assert set(prices.__all__) == {"DEFAULT_FX", "Price", "PriceBook", "PriceTier", "usage_cost"}
    assert set(ledger.__all__) == {
        "AttemptRow",
        "BackgroundLedger",
        "Ledger",
        "RequestRow",
        "SqliteLedger",
        "open_ledger",
        "read_attempts",
        "read_requests",
    }
    assert set(export.__all__) == {
        "EXPORT_FIELDS",
        "export",
        "export_rows",
        "format_money",
        "format_ts",
        "parse_since",
    }
    for module in (prices, ledger, export):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_signatures() -> None:
    assert list(inspect.signature(prices.PriceBook.cost).parameters) == [
        "self",
        "provider",
        "model",
        "usage",
        "at",
        "batch",
        "mode",
        "batch_api",
    ]
    assert list(inspect.signature(export.export).parameters) == ["url", "fmt", "since", "out"]
    assert list(inspect.signature(ledger.read_requests).parameters) == ["url", "since"]
    assert {"record", "start", "close", "flush"} <= set(dir(ledger.SqliteLedger))
