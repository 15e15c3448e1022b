"""The learned per-key baseline: warm-up, deferred learning, scores in [0, 1], outliers stand out."""

from __future__ import annotations

import random
import statistics

import pytest

from bastion.fraud.model import MAX_PENDING, Baselines, Features, features


def typical(rng: random.Random) -> Features:
    """A bot's usual order: around its usual size, near the reference, every ~10 s, either side."""
    return features(
        100.0 * rng.uniform(0.8, 1.25),
        100.0,
        rng.uniform(-20.0, 20.0),
        rng.uniform(8.0, 12.0),
        buy=rng.random() < 0.5,
    )


def outlier() -> Features:
    """A thief's order: a thousand times the usual size, 30 % beyond the reference, at once, market."""
    return features(100_000.0, 100.0, 3_000.0, 0.01, buy=True, market=True, new_symbol=True)


def learned(n: int, *, seed: int = 11, warmup: int = 50, key: str = "k1") -> tuple[Baselines, random.Random]:
    rng = random.Random(seed)
    model = Baselines(warmup=warmup)
    for _ in range(n):
        model.learn_later(key, typical(rng))
    assert model.learn_pending(limit=n) == n
    return model, rng


def test_features_are_relative_to_the_keys_habits() -> None:
    x = features(1_000.0, 100.0, 250.0, 10.0, buy=True)
    assert x.size == pytest.approx(1.0)  # ten times the usual notional
    assert x.gap == pytest.approx(1.0)
    assert (x.buy, x.market, x.new_symbol) == (True, False, False)
    first = features(1_000.0, None, 0.0, None)
    assert first.size == 0.0 and first.gap == pytest.approx(3.6)  # no history: usual size, an hour's gap
    assert features(100.0, 100.0, 0.0, 0.0).gap == pytest.approx(-3.0)  # gaps floor at 1 ms
    assert features(100.0, 100.0, 1e9, 1.0).as_dict()["deviation"] == 1.0  # clipped to its scale
    assert features(100.0, 100.0, -1e9, 1.0).as_dict()["deviation"] == 0.0
    assert features(100.0, 100.0, 0.0, 1.0).as_dict()["deviation"] == 0.5
    assert all(0.0 <= v <= 1.0 for v in features(1e12, 1.0, 1e9, 1e-9).as_dict().values())
    assert set(x.as_dict()) == {"size", "deviation", "gap", "new_symbol", "buy", "market"}


def test_warmup_must_be_positive() -> None:
    with pytest.raises(ValueError, match="warmup"):
        Baselines(warmup=0)


def test_no_score_until_the_key_has_warmup_learned_orders() -> None:
    rng = random.Random(1)
    model = Baselines(warmup=5)
    assert model.score("k1", typical(rng)) is None  # no model at all
    for _ in range(4):
        model.learn_later("k1", typical(rng))
    model.learn_pending()
    assert model.score("k1", typical(rng)) is None  # four of five
    model.learn_later("k1", typical(rng))
    model.learn_pending()
    assert isinstance(model.score("k1", typical(rng)), float)
    assert model.score("k2", typical(rng)) is None  # each key is its own


def test_learning_is_deferred_until_learn_pending() -> None:
    rng = random.Random(2)
    model = Baselines(warmup=3)
    for _ in range(7):
        model.learn_later("k1", typical(rng))
    assert model.pending == 7
    assert model.score("k1", typical(rng)) is None  # queued is not learned
    assert model.learn_pending(limit=4) == 4
    assert model.pending == 3
    assert model.learn_pending() == 3
    assert model.pending == 0
    assert model.learn_pending() == 0


def test_the_queue_is_bounded() -> None:
    model = Baselines(warmup=1)
    x = typical(random.Random(3))
    for _ in range(MAX_PENDING + 5):
        model.learn_later("k1", x)
    assert model.pending == MAX_PENDING


def test_scores_stay_within_zero_and_one() -> None:
    model, rng = learned(200)
    probes = [typical(rng) for _ in range(100)] + [outlier()]
    probes += [
        features(rng.uniform(1e-6, 1e9), 100.0, rng.uniform(-1e6, 1e6), rng.uniform(0, 1e6))
        for _ in range(100)
    ]
    scores = [model.score("k1", x) for x in probes]
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores)


def test_an_outlier_scores_higher_than_typical_orders() -> None:
    model, rng = learned(200)
    usual = [model.score("k1", typical(rng)) for _ in range(50)]
    strange = model.score("k1", outlier())
    assert strange is not None and all(s is not None for s in usual)
    assert strange > statistics.median(s for s in usual if s is not None)


def test_learning_is_seeded_and_deterministic() -> None:
    first, _ = learned(120, seed=5)
    second, _ = learned(120, seed=5)
    probes = [typical(random.Random(i)) for i in range(10)] + [outlier()]
    assert [first.score("k1", x) for x in probes] == [second.score("k1", x) for x in probes]


# -- what a learned min-max scaler got wrong, and fixed scales get right ------------------------------
def test_a_first_market_order_in_a_new_symbol_scores_differently() -> None:
    model, _ = learned(200)
    usual = features(100.0, 100.0, 0.0, 10.0, buy=True)
    unusual = features(100.0, 100.0, 0.0, 10.0, buy=True, market=True, new_symbol=True)
    assert model.score("k1", unusual) != model.score("k1", usual)


def test_a_far_larger_order_scores_higher_than_one_at_the_edge_of_the_usual() -> None:
    model, _ = learned(200)
    edge = model.score("k1", features(125.0, 100.0, 0.0, 10.0, buy=True))
    huge = model.score("k1", features(1e8, 100.0, 0.0, 10.0, buy=True))
    assert edge is not None and huge is not None and huge > edge


def test_the_real_model_crosses_the_threshold_only_for_orders_strange_on_several_counts() -> None:
    """Not a stub: river's trees, learned on a key's usual stream, put an order that is far
    off on size, price and timing at once above ``model_threshold`` (so it earns points);
    none of 500 usual orders, and no order odd on one count alone, gets there."""
    from bastion.config import FraudSettings
    from bastion.fraud.rules import model_points

    s = FraudSettings()
    model, rng = learned(300)
    usual = [model.score("k1", typical(rng)) for _ in range(500)]
    assert all(x is not None and x < s.model_threshold for x in usual)
    assert all(model_points(x, s) is None for x in usual)
    for one_count in (
        features(100_000.0, 100.0, 0.0, 10.0, buy=True),  # size alone
        features(100.0, 100.0, 3_000.0, 10.0, buy=True),  # price alone
        features(100.0, 100.0, 0.0, 0.01, buy=True),  # timing alone
    ):
        score = model.score("k1", one_count)
        assert score is not None and score < s.model_threshold
    several = model.score("k1", features(10_000.0, 100.0, 2_000.0, 0.01, buy=True))
    assert several is not None and several >= s.model_threshold
    found = model_points(several, s)
    assert found is not None and 0 < found.points <= s.model_weight
    strangest = model.score("k1", outlier())
    assert strangest is not None and strangest > several
