"""Fraud and anomaly detection: what a thief holding a *valid* key does, seen in behaviour.

No signature check stops someone who stole a trade-only key (the 2022 3Commas leak: stolen
keys bought the thieves' illiquid coins at inflated prices).  This package judges each order
against what the key, its account and its owner have done before:

- ``networks.py``  addresses and networks each key and account has used (new-network rule);
- ``activity.py``  per-key and per-symbol windows and baselines (bursts, spoofing ratios,
                   probing), and each owner's resting orders (self-match prevention);
- ``model.py``     a learned per-key baseline (river's HalfSpaceTrees over scaled features);
- ``rules.py``     the rules, each a pure function with a reason code and its thresholds;
- ``engine.py``    the rules and the model combined into one action: allow, alert, hold,
                   deny or halt.

The stage that applies the action is ``pipeline/fraud.py``; nothing here does I/O or reads
the time itself.  docs/fraud.md describes every rule and threshold.
"""
