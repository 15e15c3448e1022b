"""A Binance-spot REST adapter: wire structs → domain types at the boundary (``wire``), the
venue's HMAC query signature (``signing``), and the :class:`~bastion.ports.Venue` itself
(``venue``), reached through the bounded transport and breaker of ``venues/http.py``."""
