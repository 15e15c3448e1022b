"""OWASP API2:2023 Broken Authentication, against a real server.

Every way of presenting a wrong, stale, borrowed or half signature: missing, malformed,
duplicated and conflicting ``Signature``/``Signature-Input`` fields; a swapped ``alg`` and
the classic confusion of HMAC keyed with the Ed25519 public key; ``created`` far in the
future or past; revoked, expired, rotated-out, unknown and mistyped key ids; signatures that
cover too little; bob's key speaking for alice's key id; replayed requests and nonces.

Each one must be the one opaque ``401 AUTHENTICATION_FAILED`` ("Authentication failed.",
no other field), with the precise reason only in the request's ledger entry (stage ``authn``
or ``replay``), and nothing may change. The brute-force lockout of a key id under attack is
checked on a server of its own (``lockout``) with a low threshold.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bastion.config import load_settings
from bastion.crypto.digest import content_digest
from bastion.crypto.keys import (
    generate_ed25519,
    load_ed25519_private,
    new_key_id,
    private_key_pem,
    write_secret_file,
)
from bastion.domain.principals import parse_scopes
from bastion.services import Services
from tests.e2e.conftest import Gateway, Key, Response, _configure, cli, free_port, serve, stop
from tests.security.conftest import (
    ORDER,
    Target,
    assert_refused,
    refusal_shape,
    send,
    sign,
    signed_raw,
    unchanged,
)

pytestmark = pytest.mark.e2e
ACCOUNT = "/v1/account"
_SEEN: list[Response] = []  # every refusal of this module, for the "one opaque error" check


def refused(response: Response, stage: str, reason: str, target: Gateway | None = None) -> dict[str, object]:
    entry = assert_refused(response, 401, "AUTHENTICATION_FAILED", stage, reason=reason, target=target)
    assert set(response.body["error"]) == {"code", "message", "request_id"}  # no hint of why
    if target is None:
        _SEEN.append(response)
    return entry


def nonce_of(headers: dict[str, str]) -> str:
    return headers["signature-input"].split('nonce="')[1].split('"')[0]


def test_missing_signature_fields(target: Target) -> None:
    signed = sign(target, "alice", "GET", ACCOUNT)
    with unchanged(target):
        refused(send(target, "GET", ACCOUNT), "authn", "missing signature-input header")
        only_input = {"signature-input": signed["signature-input"]}
        refused(send(target, "GET", ACCOUNT, headers=only_input), "authn", "missing signature header")
        only_signature = {"signature": signed["signature"]}
        refused(send(target, "GET", ACCOUNT, headers=only_signature), "authn", "missing signature-input")
        empty = {"signature-input": "", "signature": ""}
        refused(send(target, "GET", ACCOUNT, headers=empty), "authn", "")
        # a bearer token, a basic password or an API-key header is no signature, even with
        # the HMAC key's real secret in it
        hmac_key = target.keys["alice_hmac"]
        assert hmac_key.secret is not None
        basic = base64.b64encode(f"{hmac_key.key_id}:{hmac_key.secret}".encode()).decode()
        for headers in (
            {"authorization": f"Bearer {target.keys['alice'].key_id}"},
            {"authorization": f"Bearer {hmac_key.secret}"},
            {"authorization": f"Basic {basic}"},
            {"x-api-key": hmac_key.key_id, "x-api-secret": hmac_key.secret},
        ):
            refused(send(target, "GET", ACCOUNT, headers=headers), "authn", "missing signature-input header")


def test_malformed_signature_fields(target: Target) -> None:
    good = sign(target, "alice", "GET", ACCOUNT)
    cases = [
        ({"signature-input": "garbage(((", "signature": good["signature"]}, "malformed signature field"),
        ({"signature-input": good["signature-input"], "signature": 'bastion="abc"'}, "not a byte sequence"),
        ({"signature-input": good["signature-input"], "signature": "bastion=:not base64!:"}, "malformed"),
        ({"signature-input": "bastion=abc", "signature": good["signature"]}, "not an inner list"),
        ({"signature-input": 'bastion=("@method" @target-uri)', "signature": "bastion=:AA==:"}, "malformed"),
        ({"signature-input": good["signature-input"] + ",", "signature": good["signature"]}, "malformed"),
        ({"signature-input": good["signature-input"], "signature": "bastion=:AAAA:"}, "does not verify"),
    ]
    with unchanged(target):
        for headers, reason in cases:
            refused(send(target, "GET", ACCOUNT, headers=headers), "authn", reason)
        # parameters of the wrong type, or missing
        refused(signed_raw(target, "alice", "GET", ACCOUNT, params={"created": "x"}), "authn", "created")
        refused(signed_raw(target, "alice", "GET", ACCOUNT, params={"keyid": 7}), "authn", "keyid parameter")
        refused(signed_raw(target, "alice", "GET", ACCOUNT, params={"expires": "soon"}), "authn", "expires")
        no_created = good["signature-input"].replace(";created=", ";made=")
        headers = {"signature-input": no_created, "signature": good["signature"]}
        refused(send(target, "GET", ACCOUNT, headers=headers), "authn", "created parameter missing")
        # component names the parser refuses: parameters, upper case, unknown derived ones
        template = 'bastion=({});created={};keyid="{}";nonce="{}"'
        for components in ('"@method";req "@target-uri"', '"@METHOD" "@target-uri"', '"@method" "@target"'):
            value = template.format(components, int(time.time()), target.keys["alice"].key_id, "n" * 20)
            headers = {"signature-input": value, "signature": "bastion=:AA==:"}
            refused(send(target, "GET", ACCOUNT, headers=headers), "authn", "")


def test_duplicated_and_conflicting_signature_fields(target: Target) -> None:
    first = sign(target, "alice", "GET", ACCOUNT)
    second = sign(target, "alice", "GET", ACCOUNT)
    with unchanged(target):
        lines = [("signature-input", first["signature-input"])] * 2 + [("signature", first["signature"])]
        refused(
            send(target, "GET", ACCOUNT, headers=lines), "authn", "signature-input header sent more than once"
        )
        lines = [("signature-input", first["signature-input"])] + [("signature", first["signature"])] * 2
        refused(send(target, "GET", ACCOUNT, headers=lines), "authn", "signature header sent more than once")
        other = {k: v.replace("bastion=", "other=", 1) for k, v in second.items()}
        two = {
            "signature-input": f"{first['signature-input']}, {other['signature-input']}",
            "signature": f"{first['signature']}, {other['signature']}",
        }
        refused(send(target, "GET", ACCOUNT, headers=two), "authn", "exactly one signature is accepted")
        labels = {"signature-input": first["signature-input"], "signature": other["signature"]}
        refused(send(target, "GET", ACCOUNT, headers=labels), "authn", "labels differ")
        # one field per header, but each from a different signature
        mixed = {"signature-input": first["signature-input"], "signature": second["signature"]}
        refused(send(target, "GET", ACCOUNT, headers=mixed), "authn", "signature does not verify")


def test_wrong_algorithm_and_key_confusion(target: Target) -> None:
    assert target.keys["alice"].private_key_path is not None
    public = load_ed25519_private(target.keys["alice"].private_key_path.read_bytes()).public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with unchanged(target):
        reason = "alg hmac-sha256 does not match the key's ed25519"
        refused(signed_raw(target, "alice", "GET", ACCOUNT, alg="hmac-sha256"), "authn", reason)
        # HMAC keyed with the Ed25519 public key (PEM or raw): the textbook algorithm confusion
        for secret in (pem, raw, target.keys["alice"].key_id.encode()):
            attack = signed_raw(target, "alice", "GET", ACCOUNT, alg="hmac-sha256", hmac_secret=secret)
            refused(attack, "authn", reason)
            attack = signed_raw(target, "alice", "GET", ACCOUNT, alg=None, hmac_secret=secret)
            refused(attack, "authn", "signature does not verify")
        for alg in ("none", "rsa-pss-sha512", "ecdsa-p256-sha256", "ED25519", "hs256"):
            refused(
                signed_raw(target, "alice", "GET", ACCOUNT, alg=alg), "authn", "alg parameter not supported"
            )
        # the other way round: an HMAC key presented as Ed25519, signed with its own secret
        reason = "alg ed25519 does not match the key's hmac-sha256"
        refused(signed_raw(target, "alice_hmac", "GET", ACCOUNT, alg="ed25519"), "authn", reason)
        # an HMAC key's id with an Ed25519 signature and no alg
        attack = signed_raw(target, "alice_hmac", "GET", ACCOUNT, alg=None, signer="alice")
        refused(attack, "authn", "signature does not verify")


def test_created_in_the_future_or_the_past(target: Target) -> None:
    now = int(time.time())
    with unchanged(target):
        for created, reason in (
            (now + 30, "in the future"),
            (now + 3600, "in the future"),
            (now + 10**9, "in the future"),
            (now - 30, "old"),
            (now - 365 * 86400, "old"),
            (0, "old"),
            (-1, "old"),
        ):
            refused(signed_raw(target, "alice", "GET", ACCOUNT, created=created), "replay", reason)
        refused(signed_raw(target, "alice", "GET", ACCOUNT, expires=now - 1), "authn", "past its expires")


def test_revoked_expired_rotated_and_unknown_keys(target: Target) -> None:
    assert target.call("rotated_in", "GET", ACCOUNT).status == 200  # the successor works
    stranger = generate_ed25519()
    with unchanged(target):
        for who, reason in (
            ("revoked", "revoked key"),
            ("expired", "expired key"),
            ("rotated_out", "expired key"),
        ):
            refused(signed_raw(target, who, "GET", ACCOUNT), "authn", reason)
            body = json.dumps(dict(ORDER, client_order_id=f"dead-{who}")).encode()
            refused(signed_raw(target, who, "POST", "/v1/orders", body=body), "authn", reason)
            order = target.order_ids["alice_open"]
            refused(signed_raw(target, who, "DELETE", f"/v1/orders/{order}"), "authn", reason)
        # a well-formed id nobody issued, signed with a key nobody registered
        attack = signed_raw(target, "alice", "GET", ACCOUNT, keyid=new_key_id(), private_key=stranger)
        refused(attack, "authn", "unknown key")
        alice = target.keys["alice"].key_id
        for keyid in (alice[:-1] + ("A" if alice[-1] != "A" else "B"), alice.lower(), alice[4:], "", "bst_"):
            refused(signed_raw(target, "alice", "GET", ACCOUNT, keyid=keyid), "authn", "key id malformed")


def test_signatures_that_cover_too_little(target: Target) -> None:
    body = json.dumps(dict(ORDER, client_order_id="thin-1")).encode()
    with unchanged(target):
        thin = signed_raw(target, "alice", "GET", ACCOUNT, components=("@target-uri",))
        refused(thin, "authn", "does not cover @method")
        thin = signed_raw(target, "alice", "GET", ACCOUNT, components=("@method", "@authority"))
        refused(thin, "authn", "does not cover @target-uri")
        thin = signed_raw(target, "alice", "GET", ACCOUNT, components=("@method", "@path"))
        refused(thin, "authn", "does not cover @target-uri")  # @path without @query
        thin = signed_raw(target, "alice", "GET", ACCOUNT, components=())
        refused(thin, "authn", "does not cover @method")
        thin = signed_raw(
            target, "alice", "POST", "/v1/orders", body=body, components=("@method", "@target-uri")
        )
        refused(thin, "authn", "does not cover content-digest")
        dropped = signed_raw(target, "alice", "POST", "/v1/orders", body=body, drop=("content-digest",))
        refused(dropped, "authn", "content-digest header missing or repeated")
        # the body changed after signing, with and without a digest recomputed to match it
        headers = sign(target, "alice", "POST", "/v1/orders", body=body)
        tampered = body.replace(b'"1.00"', b'"9.00"')
        refused(send(target, "POST", "/v1/orders", tampered, headers), "authn", "does not match the body")
        headers = sign(target, "alice", "POST", "/v1/orders", body=body) | {
            "content-digest": content_digest(tampered)
        }
        refused(send(target, "POST", "/v1/orders", tampered, headers), "authn", "signature does not verify")
        # a signature for another request: another path, method, query or authority
        headers = sign(target, "alice", "GET", "/v1/markets")
        refused(send(target, "GET", ACCOUNT, headers=headers), "authn", "signature does not verify")
        order = target.order_ids["alice_open"]
        headers = sign(target, "alice", "GET", f"/v1/orders/{order}")
        refused(send(target, "DELETE", f"/v1/orders/{order}", headers=headers), "authn", "does not verify")
        headers = sign(target, "alice", "GET", "/v1/orders", query="status=open")
        refused(send(target, "GET", "/v1/orders?status=all", headers=headers), "authn", "does not verify")
        attack = signed_raw(target, "alice", "GET", ACCOUNT, authority="evil.example")
        refused(attack, "authn", "signature does not verify")
    assert target.call("alice", "GET", f"/v1/orders/{order}").body["status"] == "new"


def test_bobs_key_cannot_speak_for_alices_key_id(target: Target) -> None:
    alice = target.keys["alice"].key_id
    with unchanged(target):
        refused(
            signed_raw(target, "alice", "GET", ACCOUNT, signer="bob"), "authn", "signature does not verify"
        )
        body = json.dumps(dict(ORDER, client_order_id="borrowed-1")).encode()
        attack = signed_raw(target, "bob", "POST", "/v1/orders", body=body, keyid=alice)
        refused(attack, "authn", "signature does not verify")
        order = target.order_ids["alice_open"]
        refused(
            signed_raw(target, "bob", "DELETE", f"/v1/orders/{order}", keyid=alice),
            "authn",
            "does not verify",
        )
        # alice's HMAC key id with bob's Ed25519 signature
        attack = signed_raw(target, "bob", "GET", ACCOUNT, keyid=target.keys["alice_hmac"].key_id, alg=None)
        refused(attack, "authn", "signature does not verify")


def test_a_captured_request_cannot_be_replayed(target: Target) -> None:
    read = sign(target, "alice", "GET", ACCOUNT)
    assert send(target, "GET", ACCOUNT, headers=read).status == 200
    raw = json.dumps(dict(ORDER, client_order_id=f"replay-{time.time_ns()}")).encode()
    order = sign(target, "alice", "POST", "/v1/orders", body=raw)
    placed = send(target, "POST", "/v1/orders", raw, order)
    assert placed.status == 201
    try:
        with unchanged(target):
            refused(send(target, "GET", ACCOUNT, headers=read), "replay", "nonce already used")
            refused(send(target, "POST", "/v1/orders", raw, order), "replay", "nonce already used")
            # the same nonce in a fresh signature of another request
            again = signed_raw(target, "alice", "GET", "/v1/markets", nonce=nonce_of(read))
            refused(again, "replay", "nonce already used")
            # the captured order, its client order id changed and re-signed with the old nonce
            other = raw.replace(b"replay-", b"replay2-")
            attack = signed_raw(target, "alice", "POST", "/v1/orders", body=other, nonce=nonce_of(order))
            refused(attack, "replay", "nonce already used")
            for bad in ("short", "x" * 129, "n" * 15 + "!", "n" * 16 + " "):
                refused(signed_raw(target, "alice", "GET", ACCOUNT, nonce=bad), "authn", "nonce parameter")
    finally:
        assert target.call("alice", "DELETE", f"/v1/orders/{placed.body['id']}").status == 200


def test_every_failure_is_the_same_opaque_401(target: Target) -> None:
    """Whatever went wrong, the caller sees one status, one body shape, one message and the
    same header names; the reasons differ only in the ledger. Checked over one failure of
    each kind here and every refusal the module's other tests saw."""
    now = int(time.time())
    captured = sign(target, "alice", "GET", ACCOUNT)
    assert send(target, "GET", ACCOUNT, headers=captured).status == 200
    with unchanged(target):
        kinds = [
            ("authn", send(target, "GET", ACCOUNT)),
            ("authn", send(target, "GET", ACCOUNT, headers={"signature-input": "x", "signature": "y"})),
            ("authn", signed_raw(target, "revoked", "GET", ACCOUNT)),
            ("authn", signed_raw(target, "expired", "GET", ACCOUNT)),
            ("authn", signed_raw(target, "alice", "GET", ACCOUNT, keyid=new_key_id())),
            ("authn", signed_raw(target, "alice", "GET", ACCOUNT, signer="bob")),
            ("authn", signed_raw(target, "alice_hmac", "GET", ACCOUNT, alg="ed25519")),
            ("replay", signed_raw(target, "alice", "GET", ACCOUNT, created=now + 60)),
            ("replay", send(target, "GET", ACCOUNT, headers=captured)),
        ]
        reasons = {str(refused(response, stage, "")["reason"]) for stage, response in kinds}
    assert len(reasons) == len(kinds)  # nine different reasons, all in the ledger alone
    responses = [response for _, response in kinds]
    shapes = {refusal_shape(r) for r in [*responses, *_SEEN]}
    assert len(shapes) == 1, shapes
    status, error, _ = next(iter(shapes))
    assert (status, error) == (
        401,
        (("code", "AUTHENTICATION_FAILED"), ("message", "Authentication failed.")),
    )
    assert all("www-authenticate" not in r.headers and "retry-after" not in r.headers for r in responses)


# -- the lockout of a key id under attack, on a server of its own ------------------------------
_LOCKOUT_AFTER = 3


@pytest.fixture(scope="module")
def lockout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A server whose key ids lock after 3 failures naming them (address bans stay raised,
    so what is seen is the key lockout), with keys ``bot``, ``victim`` and ``other``."""
    home = tmp_path_factory.mktemp("lockout")
    cli(home, "init")
    port = free_port()
    _configure(home, port)
    config = home / "bastion.toml"
    text = config.read_text().replace(
        "key_lockout_after_failures = 10000 ", f"key_lockout_after_failures = {_LOCKOUT_AFTER} "
    )
    config.write_text(text.replace("ban_seconds = 30.0", "ban_seconds = 120.0"))
    keys: dict[str, Key] = {}

    async def provision() -> None:
        services = Services.build(home, load_settings(home))
        await services.start()
        try:
            await services.create_account("lock")
            for name in ("bot", "victim", "other"):
                private = generate_ed25519()
                record, _ = await services.create_key(
                    account="lock",
                    scopes=parse_scopes("read"),
                    public_key=private.public_key(),
                    lifetime=timedelta(days=1),
                )
                path = home / "keys" / f"{record.key_id}.pem"
                write_secret_file(path, private_key_pem(private))
                keys[name] = Key(record.key_id, Path(path))
        finally:
            await services.close()

    asyncio.run(provision())
    server = serve(home, port, keys)
    try:
        yield server
    finally:
        stop(server)


def _lock(server: Gateway, victim: str, attacker: str) -> None:
    """Fail ``_LOCKOUT_AFTER`` times naming ``victim`` (signed with another key)."""
    for _ in range(_LOCKOUT_AFTER):
        attempt = signed_raw(server, victim, "GET", ACCOUNT, signer="other", source=attacker)
        refused(attempt, "authn", "signature does not verify", target=server)


def test_a_key_under_attack_is_locked_against_strangers(lockout: Gateway) -> None:
    assert lockout.call("bot", "GET", ACCOUNT).status == 200  # its bot uses it from 127.0.0.1
    _lock(lockout, "bot", "127.0.0.60")
    for source in ("127.0.0.60", "127.0.0.61"):
        attempt = signed_raw(lockout, "bot", "GET", ACCOUNT, signer="other", source=source)
        assert_refused(attempt, 429, "BANNED", "shield", reason="is locked", target=lockout)
        assert int(attempt.headers["retry-after"]) >= 1
    assert lockout.call("bot", "GET", ACCOUNT).status == 200  # the bot keeps working
    banned = [e["data"] for e in lockout.ledger_entries() if e["kind"] == "shield.banned"]
    assert any(b["kind"] == "key" and b["subject"] == lockout.keys["bot"].key_id for b in banned)


def test_a_decoy_key_id_does_not_dodge_the_lockout(lockout: Gateway) -> None:
    victim, decoy = lockout.keys["victim"].key_id, new_key_id()
    _lock(lockout, "victim", "127.0.0.62")
    plain = signed_raw(lockout, "victim", "GET", ACCOUNT, signer="other", source="127.0.0.63")
    assert_refused(plain, 429, "BANNED", "shield", reason="is locked", target=lockout)
    attempts = {
        "decoy parameter": signed_raw(
            lockout, "victim", "GET", ACCOUNT, signer="other", source="127.0.0.63", lead={"xkeyid": decoy}
        ),
        "padding": signed_raw(
            lockout, "victim", "GET", ACCOUNT, signer="other", source="127.0.0.63", lead={"pad": "p" * 2100}
        ),
    }
    first = sign(lockout, "victim", "GET", ACCOUNT, keyid=decoy)
    second = sign(lockout, "victim", "GET", ACCOUNT, signer="other")
    attempts["duplicated label"] = send(
        lockout,
        "GET",
        ACCOUNT,
        headers={
            "signature-input": f"{first['signature-input']}, {second['signature-input']}",
            "signature": f"{first['signature']}, {second['signature']}",
        },
        source="127.0.0.63",
    )
    statuses = {name: response.status for name, response in attempts.items()}
    assert statuses == dict.fromkeys(attempts, 429), f"the lock of {victim} was dodged: {statuses}"
