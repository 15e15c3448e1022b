"""Policy documents in memory, and each key's effective policy computed once per change.

Loaded from the store at start-up and again whenever the operator changes a policy (the CLI
tells a running server over the control socket).  The risk stage reads it synchronously.
"""

from __future__ import annotations

from collections.abc import Mapping

from bastion.domain.policy import EffectivePolicy, PolicyDocument, effective
from bastion.domain.principals import Principal


def account_subject(account: str) -> str:
    return "account:" + account


def key_subject(key_id: str) -> str:
    return "key:" + key_id


class PolicyCache:
    def __init__(self, documents: Mapping[str, tuple[int, PolicyDocument]] | None = None) -> None:
        self._documents: dict[str, tuple[int, PolicyDocument]] = dict(documents or {})
        self._effective: dict[tuple[str, frozenset[object]], EffectivePolicy] = {}

    def replace(self, documents: Mapping[str, tuple[int, PolicyDocument]]) -> None:
        self._documents = dict(documents)
        self._effective = {}

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
