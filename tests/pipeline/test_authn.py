from __future__ import annotations

import dataclasses
import os
from datetime import timedelta
from pathlib import Path

import pytest

from bastion.clock import FakeClock
from bastion.crypto.httpsig import sign_request
from bastion.crypto.keys import new_hmac_secret, new_key_id
from bastion.domain.principals import Scope
from bastion.domain.verdict import Allow, Deny
from bastion.errors import ErrorCode
from bastion.pipeline.authn import Authenticate, missing_components
from bastion.pipeline.context import RequestContext
from bastion.ports import KeyRecord
from bastion.store.memory import MemoryKeyStore
from bastion.vault.keys import VaultKeySecrets
from tests.support import Req, context, make_key, order_body, signed


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def verdict_for(ctx: object, store: MemoryKeyStore, clock: FakeClock) -> Allow | Deny:
    result = await Authenticate(store, clock)(ctx)  # type: ignore[arg-type]
    assert isinstance(result, Allow | Deny)
    return result


async def test_a_signed_request_authenticates(clock: FakeClock) -> None:
    key = make_key(clock, scopes=frozenset({Scope.TRADE}))
    ctx = signed(Req("place_order", order_body()), key, clock)
    assert isinstance(await verdict_for(ctx, MemoryKeyStore([key.record]), clock), Allow)
    assert ctx.principal is not None
    assert (ctx.principal.key_id, ctx.principal.account) == (key.key_id, "alice")


def _deny_reason(verdict: Allow | Deny) -> str:
    assert isinstance(verdict, Deny)
    assert (verdict.stage, verdict.code, verdict.public_reason) == (
        "authn",
        ErrorCode.AUTHENTICATION_FAILED,
        None,
    )
    return verdict.reason


async def test_unknown_revoked_and_expired_keys(clock: FakeClock) -> None:
    known = make_key(clock)
    revoked = make_key(clock, revoked_at=clock.now() - timedelta(seconds=1))
    expired = make_key(clock, expires_at=clock.now() - timedelta(seconds=1))
    store = MemoryKeyStore([known.record, revoked.record, expired.record])
    stranger = make_key(clock)
    reasons = [
        _deny_reason(await verdict_for(signed(Req("get_account"), k, clock), store, clock))
        for k in (stranger, revoked, expired)
    ]
    assert reasons == ["unknown key", "revoked key", "expired key"]


async def test_malformed_key_id_is_refused_before_any_lookup(clock: FakeClock) -> None:
    key = make_key(clock)
    store = MemoryKeyStore([key.record])
    ctx = signed(Req("get_account"), key, clock)
    ctx.headers["signature-input"] = [
        ctx.headers["signature-input"][0].replace(key.key_id, "bst_" + "A" * 30)
    ]
    assert "checksum" in _deny_reason(await verdict_for(ctx, store, clock))
    assert store.lookups == 0


async def test_signature_by_another_key_fails(clock: FakeClock) -> None:
    key, other = make_key(clock), make_key(clock)
    ctx = signed(Req("get_account"), key, clock)
    store = MemoryKeyStore([dataclasses.replace(key.record, public_key=other.record.public_key)])
    assert _deny_reason(await verdict_for(ctx, store, clock)) == "signature does not verify"


async def test_body_changed_after_signing(clock: FakeClock) -> None:
    key = make_key(clock)
    ctx = signed(Req("place_order", order_body(quantity="1")), key, clock)
    ctx.body = ctx.body.replace(b'"1"', b'"9"')
    assert "does not match the body" in _deny_reason(
        await verdict_for(ctx, MemoryKeyStore([key.record]), clock)
    )


async def test_path_changed_after_signing(clock: FakeClock) -> None:
    key = make_key(clock)
    ctx = signed(Req("get_order", path_params={"id": "ord_" + "a" * 24}), key, clock)
    ctx.path = "/v1/orders/ord_" + "b" * 24
    assert (
        _deny_reason(await verdict_for(ctx, MemoryKeyStore([key.record]), clock))
        == "signature does not verify"
    )


async def test_missing_headers(clock: FakeClock) -> None:
    key = make_key(clock)
    ctx = signed(Req("get_account"), key, clock)
    del ctx.headers["signature"]
    assert "missing signature" in _deny_reason(await verdict_for(ctx, MemoryKeyStore([key.record]), clock))


async def test_alg_must_match_the_key(clock: FakeClock) -> None:
    key = make_key(clock)
    ctx = signed(Req("get_account"), key, clock)
    ctx.headers["signature-input"] = [ctx.headers["signature-input"][0].replace('"ed25519"', '"hmac-sha256"')]
    assert "does not match" in _deny_reason(await verdict_for(ctx, MemoryKeyStore([key.record]), clock))


def test_required_components() -> None:
    assert missing_components(("@method", "@target-uri"), has_body=False) is None
    assert missing_components(("@method", "@path", "@query"), has_body=False) is None
    assert missing_components(("@method", "@path"), has_body=False) == "@target-uri"
    assert missing_components(("@target-uri",), has_body=False) == "@method"
    assert missing_components(("@method", "@target-uri"), has_body=True) == "content-digest"


class TestHmacKeys:
    """HMAC-SHA256 keys: the secret lives sealed by the vault and is opened per request."""

    @staticmethod
    def setup_key(tmp_path: Path, clock: FakeClock) -> tuple[KeyRecord, str, VaultKeySecrets]:
        from bastion.vault.master import KeyfileMasterKey, MasterKeyRing

        KeyfileMasterKey.create(tmp_path / "master-1.key")
        vault = VaultKeySecrets(MasterKeyRing({1: KeyfileMasterKey(tmp_path / "master-1.key", 1)}))
        secret = new_hmac_secret()
        key_id = new_key_id()
        record = KeyRecord(
            key_id,
            "alice",
            "hmac-sha256",
            b"",
            frozenset(Scope),
            clock.now(),
            clock.now() + timedelta(days=1),
            None,
            secret_sealed=vault.seal_key_secret("alice", key_id, secret.encode()),
        )
        return record, secret, vault

    @staticmethod
    def signed_hmac(record: KeyRecord, secret: str, clock: FakeClock) -> RequestContext:
        req = Req("get_account")
        headers = sign_request(
            hmac_secret=secret.encode(),
            key_id=record.key_id,
            method="GET",
            url_scheme="https",
            authority="127.0.0.1:8443",
            path="/v1/account",
            query="",
            body=b"",
            created=int(clock.now().timestamp()),
        )
        req.headers = {k: [v] for k, v in headers.items()}
        return context(req, clock)

    async def test_a_valid_hmac_signature_authenticates_and_records_the_open(self, tmp_path: Path) -> None:
        clock = FakeClock()
        record, secret, vault = self.setup_key(tmp_path, clock)
        ctx = self.signed_hmac(record, secret, clock)
        assert isinstance(await Authenticate(MemoryKeyStore([record]), clock, vault)(ctx), Allow)
        assert ctx.outcome["vault_open"] == {"purpose": "bastion-key-hmac", "process": os.getpid()}

    async def test_wrong_secret_fails(self, tmp_path: Path) -> None:
        clock = FakeClock()
        record, _, vault = self.setup_key(tmp_path, clock)
        ctx = self.signed_hmac(record, new_hmac_secret(), clock)
        verdict = await Authenticate(MemoryKeyStore([record]), clock, vault)(ctx)
        assert _deny_reason(verdict) == "signature does not verify"

    async def test_a_sealed_secret_copied_from_another_key_does_not_open(self, tmp_path: Path) -> None:
        clock = FakeClock()
        record, secret, vault = self.setup_key(tmp_path, clock)
        other = dataclasses.replace(record, key_id=new_key_id())  # same sealed bytes, another row
        ctx = self.signed_hmac(other, secret, clock)
        verdict = await Authenticate(MemoryKeyStore([other]), clock, vault)(ctx)
        assert _deny_reason(verdict) == "the key's sealed secret does not open"

    async def test_an_ed25519_signature_cannot_pass_as_hmac(self, tmp_path: Path) -> None:
        clock = FakeClock()
        record, _, vault = self.setup_key(tmp_path, clock)
        ed_key = make_key(clock)
        ctx = signed(
            Req("get_account"),
            dataclasses.replace(ed_key, record=dataclasses.replace(ed_key.record, key_id=record.key_id)),
            clock,
        )
        verdict = await Authenticate(MemoryKeyStore([record]), clock, vault)(ctx)
        assert "does not match" in _deny_reason(verdict)  # alg="ed25519" against an hmac key


class RecordingUsage:
    def __init__(self) -> None:
        self.touched: list[tuple[str, str]] = []

    def touch(self, key_id: str, ip: str, when: object) -> None:
        self.touched.append((key_id, ip))


async def test_the_allow_list_is_checked_before_any_signature_work(clock: FakeClock) -> None:
    key = make_key(clock)
    record = dataclasses.replace(key.record, allowed_cidrs=("10.0.0.0/8",))
    usage = RecordingUsage()
    ctx = signed(Req("get_account"), key, clock)
    ctx.headers["signature"] = ["bastion=:AAAA:"]  # would fail verification; must not get that far
    verdict = await Authenticate(MemoryKeyStore([record]), clock, usage=usage)(ctx)
    assert "not in the key's allow-list" in _deny_reason(verdict)
    assert usage.touched == []


async def test_an_allowed_address_passes_and_use_is_noted(clock: FakeClock) -> None:
    key = make_key(clock)
    record = dataclasses.replace(key.record, allowed_cidrs=("127.0.0.0/8",))
    usage = RecordingUsage()
    ctx = signed(Req("get_account"), key, clock)
    assert isinstance(await Authenticate(MemoryKeyStore([record]), clock, usage=usage)(ctx), Allow)
    assert usage.touched == [(key.key_id, "127.0.0.1")]
