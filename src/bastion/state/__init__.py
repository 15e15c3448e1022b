"""Hot shared state (nonces; later counters and the kill switch).  In-memory by default."""
