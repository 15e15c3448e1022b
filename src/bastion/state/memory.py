"""In-process implementations of the state ports, for one replica."""

from __future__ import annotations

import heapq


class MemoryNonceStore:
    """Nonces kept until they expire; expired ones are swept as new ones arrive.

    ``max_entries`` bounds memory: when full, the store refuses new nonces (fails closed)
    rather than forgetting unexpired ones, which would let a replay through.
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self._seen: dict[tuple[str, str], float] = {}
        self._expiry: list[tuple[float, str, str]] = []
        self._max = max_entries

    async def claim(self, scope: str, nonce: str, *, now: float, expires_at: float) -> bool:
        self._sweep(now)
        key = (scope, nonce)
        if key in self._seen:
            return False
        if len(self._seen) >= self._max:
            return False
        self._seen[key] = expires_at
        heapq.heappush(self._expiry, (expires_at, scope, nonce))
        return True

    def _sweep(self, now: float) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now:
            expires_at, scope, nonce = heapq.heappop(heap)
            if self._seen.get((scope, nonce)) == expires_at:
                del self._seen[(scope, nonce)]

    def __len__(self) -> int:
        return len(self._seen)
