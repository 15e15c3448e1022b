"""A learned baseline per key: river's HalfSpaceTrees over order features on fixed scales.

Each bot's order stream is its own normal.  Scoring is inline and cheap (a few µs); learning
is deferred (:meth:`Baselines.learn_pending`, run off the request path), so a burst of orders
never waits for the model.  The score is in [0, 1], higher is stranger; before a key has
``warmup`` orders its score is not used.

HalfSpaceTrees wants features in [0, 1].  They are put there on fixed, documented scales, not
scaled by what the key has shown so far: a learned min-max scaler maps a feature the key
never varied to 0 (a first market order would look like every limit order) and clips
everything beyond the learned range to its edge (a million times the usual size would look
like a little more than usual).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

N_TREES = 5
HEIGHT = 6
WINDOW = 50
MAX_PENDING = 10_000


@dataclass(frozen=True, slots=True)
class Features:
    """What the model sees of one order, already relative to the key's own habits."""

    size: float  # log10 of notional over the key's mean notional
    deviation_bps: float  # aggressive distance from the reference price
    gap: float  # log10 of seconds since the key's previous order
    new_symbol: bool
    buy: bool
    market: bool
    _unit: dict[str, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # computed once: the order is scored now and learned from later
        unit = {
            "size": _scaled(self.size, -3.0, 3.0),
            "deviation": _scaled(self.deviation_bps, -5_000.0, 5_000.0),
            "gap": _scaled(self.gap, -3.0, 4.0),
            "new_symbol": 1.0 if self.new_symbol else 0.0,
            "buy": 1.0 if self.buy else 0.0,
            "market": 1.0 if self.market else 0.0,
        }
        object.__setattr__(self, "_unit", unit)

    def as_dict(self) -> dict[str, float]:
        """The features in [0, 1]: size over ±3 decades around the usual, deviation over
        ±5,000 bps, the gap over 1 ms to 3 hours (log).  Shared, not copied (the model only
        reads it): do not change it."""
        return self._unit


def _scaled(value: float, low: float, high: float) -> float:
    x = (value - low) / (high - low)
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def features(
    notional: float, mean_notional: float | None, deviation_bps: float, gap: float | None, **flags: bool
) -> Features:
    size = math.log10(max(notional, 1e-12) / mean_notional) if mean_notional else 0.0
    return Features(
        size=size,
        deviation_bps=deviation_bps,
        gap=math.log10(max(gap, 1e-3)) if gap is not None else 3.6,
        new_symbol=flags.get("new_symbol", False),
        buy=flags.get("buy", False),
        market=flags.get("market", False),
    )


class _KeyModel:
    __slots__ = ("learned", "pipeline")

    def __init__(self, seed: int) -> None:
        from river import anomaly  # imported on first use: a CLI command never pays for it

        self.pipeline = anomaly.HalfSpaceTrees(n_trees=N_TREES, height=HEIGHT, window_size=WINDOW, seed=seed)
        self.learned = 0


class Baselines:
    """One model per key; :meth:`score` inline, :meth:`learn_later` queues, learning runs later."""

    def __init__(self, warmup: int, seed: int = 7) -> None:
        if warmup < 1:
            raise ValueError("warmup must be at least 1")
        self._warmup = warmup
        self._seed = seed
        self._models: dict[str, _KeyModel] = {}
        self._pending: deque[tuple[str, dict[str, float]]] = deque(maxlen=MAX_PENDING)

    def score(self, key_id: str, x: Features) -> float | None:
        """Strangeness in [0, 1], or None while the key's model is still warming up."""
        model = self._models.get(key_id)
        if model is None or model.learned < self._warmup:
            return None
        return float(model.pipeline.score_one(x.as_dict()))  # type: ignore[no-untyped-call]

    def learn_later(self, key_id: str, x: Features) -> None:
        self._pending.append((key_id, x.as_dict()))

    def learn_pending(self, limit: int = 1_000) -> int:
        """Learn up to ``limit`` queued orders; how many were learned."""
        done = 0
        while self._pending and done < limit:
            key_id, x = self._pending.popleft()
            model = self._models.get(key_id)
            if model is None:
                model = self._models[key_id] = _KeyModel(self._seed)
            model.pipeline.learn_one(x)  # type: ignore[no-untyped-call]
            model.learned += 1
            done += 1
        return done

    @property
    def pending(self) -> int:
        return len(self._pending)
