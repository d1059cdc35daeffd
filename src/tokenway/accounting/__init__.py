"""tokenway.accounting: what every request cost, and the durable record of it.

- `prices`: the price book (built-in genai-prices catalog + config overrides, effective-dated)
  and the exact Decimal cost of a `Usage`.
- `ledger`: request and attempt rows, written by a background thread; backend by URL scheme.
- `schema` / `sqlite`: the ledger schema and migrations (SQLite and PostgreSQL), SQLite plumbing.
- `postgres` / `spool`: the PostgreSQL ledger (COPY batches, monthly partitions) and the local
  spool that keeps its rows while the server is unreachable.
- `export`: usage export as JSON Lines or CSV.

Submodules are not imported here, so the ledger can be used without loading the price catalog.
"""
