"""Trading states (the kill switch): ACTIVE, REDUCING and HALTED, at key, account and global level.

The state that applies to a request is the most restrictive of the three levels.  HALTED
refuses every new order; REDUCING lets through only orders that shrink a position; cancels
always pass, whatever the state.
"""

from __future__ import annotations

from enum import StrEnum


class TradingState(StrEnum):
    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


class Level(StrEnum):
    GLOBAL = "global"
    ACCOUNT = "account"
    KEY = "key"


def strictest(*states: TradingState) -> TradingState:
    return max(states, key=_SEVERITY.__getitem__, default=TradingState.ACTIVE)
