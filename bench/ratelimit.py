"""Rate-limit checks: Bastion's GCRA (three rules at once, atomically) against the `limits`
library's strategies (three separate hits), CPU per check.

    .venv/bin/pip install limits==5.8.0 && .venv/bin/python bench/ratelimit.py

`limits` is not a dependency of Bastion; this script exists to show why (docs/benchmarks.md).
"""

from __future__ import annotations

import time

from bastion.clock import SystemClock
from bastion.state.ratelimit import MemoryRateStore, RateRule

N = 100_000


def main() -> None:
    # `limits` is installed by hand for this comparison only (see above)
    from limits import RateLimitItemPerSecond  # type: ignore[import-not-found]
    from limits.storage import MemoryStorage  # type: ignore[import-not-found]
    from limits.strategies import (  # type: ignore[import-not-found]
        FixedWindowRateLimiter,
        MovingWindowRateLimiter,
        SlidingWindowCounterRateLimiter,
    )

    store = MemoryRateStore(SystemClock())
    rules = [RateRule(f"k:{i}", 1e9, 10**9) for i in range(3)]
    start = time.process_time()
    for _ in range(N):
        store.hit_now(rules, 1)
    results = {"Bastion GCRA, 3 rules atomically": (time.process_time() - start) / N * 1e6}
    strategies = (
        ("limits moving window", MovingWindowRateLimiter),
        ("limits fixed window", FixedWindowRateLimiter),
        ("limits sliding window counter", SlidingWindowCounterRateLimiter),
    )
    item = RateLimitItemPerSecond(10**9)
    for name, strategy in strategies:
        limiter = strategy(MemoryStorage())
        start = time.process_time()
        for _ in range(N):
            for i in range(3):
                limiter.hit(item, f"k{i}")
        results[f"{name}, 3 hits (not atomic)"] = (time.process_time() - start) / N * 1e6
    print("| check | CPU µs |")
    print("|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:.1f} |")


if __name__ == "__main__":
    main()
