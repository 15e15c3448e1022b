"""Policy documents in memory, and each key's effective policy computed once per change.

Loaded from the store at start-up, again whenever the operator changes a policy (the CLI
tells a running server over the control socket), every second when the store's stamp moved
(a change the server was not told of, or one made through another replica), and before the
first request of a key this process has not seen: a key created with limits never trades
without them, even if no notification arrives.  The stages read it synchronously.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from bastion.domain.policy import EffectivePolicy, PolicyDocument, effective
from bastion.domain.principals import Principal, Scope


def account_subject(account: str) -> str:
    return "account:" + account


def key_subject(key_id: str) -> str:
    return "key:" + key_id


class PolicyCache:
    def __init__(
        self,
        documents: Mapping[str, tuple[int, PolicyDocument]] | None = None,
        reload: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._documents: dict[str, tuple[int, PolicyDocument]] = dict(documents or {})
        self._effective: dict[tuple[str, frozenset[Scope]], EffectivePolicy] = {}
        self._reload = reload
        self._seen_keys: set[str] = set()

    def replace(self, documents: Mapping[str, tuple[int, PolicyDocument]]) -> None:
        self._documents = dict(documents)
        self._effective = {}

    async def ensure_key(self, key_id: str) -> None:
        """Before a key's first request in this process, load what is stored (it may be newer)."""
        if key_id in self._seen_keys:
            return
        if self._reload is not None:
            await self._reload()
        if len(self._seen_keys) > 1_000_000:
            self._seen_keys.clear()
        self._seen_keys.add(key_id)

    def document(self, subject: str) -> tuple[int, PolicyDocument] | None:
        return self._documents.get(subject)

    def for_principal(self, principal: Principal) -> EffectivePolicy:
        cache_key = (principal.key_id, frozenset(principal.scopes))
        found = self._effective.get(cache_key)
        if found is None:
            account = self._documents.get(account_subject(principal.account))
            key = self._documents.get(key_subject(principal.key_id))
            found = effective(
                principal.scopes,
                account[1] if account else None,
                key[1] if key else None,
                (account[0] if account else 0, key[0] if key else 0),
            )
            if len(self._effective) > 100_000:
                self._effective.clear()
            self._effective[cache_key] = found
        return found
