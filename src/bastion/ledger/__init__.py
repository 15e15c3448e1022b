"""The append-only, hash-chained ledger of every verdict and order event."""
