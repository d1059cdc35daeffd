"""Analytics over the ledger."""
