"""The durable store beside the ledger: keys, audit log, batch jobs and stored responses.

`sql.open_database(url)` takes the ledger's URL (SQLite embedded, PostgreSQL distributed) and
returns one small synchronous `Database` interface over either; components keep their own
tables, versioned by `Database.migrate(component, migrations)`.
"""

from tokenway.store.sql import Database, Migration, StoreUnavailable, Tx, open_database

__all__ = ["Database", "Migration", "StoreUnavailable", "Tx", "open_database"]
