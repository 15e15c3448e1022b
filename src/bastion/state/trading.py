"""The trading states in force, in memory: read on every order, changed by the kill switch.

The stored copy (``trading_states`` table) is loaded at start-up; a running server changes
this object first-hand when the operator's command reaches it over the control socket, so
the next request sees the change.
"""

from __future__ import annotations

from collections.abc import Iterable

from bastion.domain.trading import Level, TradingState, strictest


class TradingStates:
    def __init__(self, rows: Iterable[tuple[Level, str, TradingState]] = ()) -> None:
        self.global_state = TradingState.ACTIVE
        self._accounts: dict[str, TradingState] = {}
        self._keys: dict[str, TradingState] = {}
        self.generation = 0  # counts changes made through set(), so a slow reload never undoes one
        for level, subject, state in rows:
            self.set(level, subject, state)

    def set(self, level: Level, subject: str, state: TradingState) -> None:
        self.generation += 1
        if level is Level.GLOBAL:
            self.global_state = state
            return
        table = self._accounts if level is Level.ACCOUNT else self._keys
        if state is TradingState.ACTIVE:
            table.pop(subject, None)
        else:
            table[subject] = state

    def replace_all(self, rows: Iterable[tuple[Level, str, TradingState]]) -> None:
        """Take the stored states as a whole (levels absent from ``rows`` are active)."""
        rows = list(rows)
        accounts: dict[str, TradingState] = {
            s: st for lv, s, st in rows if lv is Level.ACCOUNT and st is not TradingState.ACTIVE
        }
        keys: dict[str, TradingState] = {
            s: st for lv, s, st in rows if lv is Level.KEY and st is not TradingState.ACTIVE
        }
        glob = [st for lv, _, st in rows if lv is Level.GLOBAL]
        self.global_state = glob[0] if glob else TradingState.ACTIVE
        self._accounts, self._keys = accounts, keys

    def get(self, level: Level, subject: str) -> TradingState:
        if level is Level.GLOBAL:
            return self.global_state
        table = self._accounts if level is Level.ACCOUNT else self._keys
        return table.get(subject, TradingState.ACTIVE)

    def for_request(self, key_id: str, account: str) -> TradingState:
        """The strictest of the global, account and key states."""
        if not self._accounts and not self._keys:
            return self.global_state
        return strictest(
            self.global_state,
            self._accounts.get(account, TradingState.ACTIVE),
            self._keys.get(key_id, TradingState.ACTIVE),
        )

    def not_active(self) -> list[tuple[Level, str, TradingState]]:
        rows: list[tuple[Level, str, TradingState]] = []
        if self.global_state is not TradingState.ACTIVE:
            rows.append((Level.GLOBAL, "", self.global_state))
        rows += [(Level.ACCOUNT, a, s) for a, s in sorted(self._accounts.items())]
        rows += [(Level.KEY, k, s) for k, s in sorted(self._keys.items())]
        return rows
