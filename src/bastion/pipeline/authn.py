"""Authentication stage: RFC 9421 request signatures with Bastion keys.

Every failure is the same public ``AUTHENTICATION_FAILED``; the precise reason (unknown,
revoked or expired key, bad signature, missing components, digest mismatch...) goes only to
the ledger through the verdict's ``reason``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.crypto import httpsig
from bastion.crypto.digest import DigestError, verify_content_digest
from bastion.crypto.keys import is_valid_key_id
from bastion.domain.addresses import address_allowed
from bastion.domain.principals import Principal
from bastion.domain.verdict import ALLOW, Deny, Verdict
from bastion.errors import ErrorCode, SignatureError
from bastion.pipeline.context import RequestContext
from bastion.ports import Clock, KeySecrets, KeyStore, KeyUsage
from bastion.vault.envelope import VaultError
from bastion.vault.keys import PURPOSE_KEY_HMAC

_PROCESS = os.getpid()


def _deny(reason: str) -> Deny:
    return Deny("authn", ErrorCode.AUTHENTICATION_FAILED, reason)


@lru_cache(maxsize=4096)
def _ed25519(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def missing_components(components: tuple[str, ...], has_body: bool) -> str | None:
    """Which required component is not covered, or None.  Required: ``@method``; the target
    (``@target-uri``, or ``@path`` with ``@query``); ``content-digest`` when there is a body."""
    covered = set(components)
    if "@method" not in covered:
        return "@method"
    if "@target-uri" not in covered and not {"@path", "@query"} <= covered:
        return "@target-uri"
    if has_body and "content-digest" not in covered:
        return "content-digest"
    return None


class Authenticate:
    name: ClassVar[str] = "authn"

    def __init__(
        self, keys: KeyStore, clock: Clock, secrets: KeySecrets | None = None, usage: KeyUsage | None = None
    ) -> None:
        self._keys = keys
        self._clock = clock
        self._secrets = secrets
        self._usage = usage

    async def __call__(self, ctx: RequestContext) -> Verdict:
        try:
            parsed = httpsig.parse_signature(ctx.headers)
        except SignatureError as exc:
            return _deny(str(exc))
        ctx.signature = parsed
        if not is_valid_key_id(parsed.keyid):
            return _deny("key id malformed or checksum wrong")
        key = await self._keys.get_key(parsed.keyid)
        if key is None:
            return _deny("unknown key")
        now = self._clock.now()
        if key.revoked_at is not None and key.revoked_at <= now:
            return _deny("revoked key")
        if key.expires_at is not None and key.expires_at <= now:
            return _deny("expired key")
        if not address_allowed(ctx.client_ip, key.allowed_cidrs):  # before any signature work
            return _deny(f"client address {ctx.client_ip[:64]} is not in the key's allow-list")
        if parsed.alg is not None and parsed.alg != key.alg:
            return _deny(f"alg {parsed.alg} does not match the key's {key.alg}")
        if parsed.expires is not None and parsed.expires <= now.timestamp():
            return _deny("signature past its expires parameter")
        missing = missing_components(parsed.components, bool(ctx.body))
        if missing is not None:
            return _deny(f"signature does not cover {missing}")
        if "content-digest" in parsed.components:
            digests = ctx.headers.get("content-digest", [])
            if len(digests) != 1:
                return _deny("content-digest header missing or repeated")
            try:
                verify_content_digest(digests[0], ctx.body)
            except DigestError as exc:
                return _deny(str(exc))
        try:
            base = httpsig.signature_base(parsed.components, parsed.params_text, ctx.view())
            if key.alg == httpsig.ED25519:
                httpsig.verify_ed25519(_ed25519(key.public_key), base, parsed.signature)
                ctx.signature_base = base  # non-repudiation: what the key signed, for the ledger
            elif key.alg == httpsig.HMAC_SHA256 and self._secrets is not None:
                try:
                    secret = self._secrets.open_key_secret(key)
                except VaultError:
                    return _deny("the key's sealed secret does not open")
                # the ledger records every open: what, by which process
                ctx.outcome["vault_open"] = {"purpose": PURPOSE_KEY_HMAC, "process": _PROCESS}
                httpsig.verify_hmac_sha256(secret, base, parsed.signature)
            else:
                return _deny(f"key algorithm {key.alg} not supported")
        except SignatureError as exc:
            return _deny(str(exc))
        except ValueError:
            return _deny("stored public key unusable")
        ctx.principal = Principal(key.key_id, key.account, key.scopes)
        ctx.key = key
        if self._usage is not None:
            self._usage.touch(key.key_id, ctx.client_ip, now)
        return ALLOW
