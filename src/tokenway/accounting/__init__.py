"""tokenway.accounting: what every request cost, and the durable record of it.

- `prices`: the price book (built-in genai-prices catalog + config overrides, effective-dated)
  and the exact Decimal cost of a `Usage`.
- `ledger`: request and attempt rows, written to SQLite by a background thread.
- `schema` / `sqlite`: the portable ledger schema, its migrations and the SQLite plumbing.
- `export`: usage export as JSON Lines or CSV.

Submodules are not imported here, so the ledger can be used without loading the price catalog.
"""
