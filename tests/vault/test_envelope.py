"""The vault's sealing format: known answers, an independent re-derivation, and tampering."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import ConfigError
from bastion.vault import KeyfileMasterKey, MasterKeyRing, SealContext, VaultError, open_secret, seal_secret
from bastion.vault.envelope import master_version
from bastion.vault.master import open_ring

GCM_TC13_TAG = "530f8afbc74536b9a963b4f1c4cb738b"  # pragma: allowlist secret - a published test vector
CONTEXT = SealContext("alice", "bst_key1", "bastion-key-hmac")


def test_aes_256_gcm_known_answers() -> None:
    """GCM specification (McGrew & Viega), test cases 13 and 14: 256-bit zero key, zero IV."""
    aead = AESGCM(bytes(32))
    assert aead.encrypt(bytes(12), b"", None).hex() == GCM_TC13_TAG
    assert aead.encrypt(bytes(12), bytes(16), None).hex() == (
        "cea7403d4d606b6e074ec5d3baf39d18" + "d0d1c8a799996bf0265b98b5d48ab919"  # pragma: allowlist secret
    )


def counter_random() -> Callable[[int], bytes]:
    counter = itertools.count(1)
    return lambda n: bytes((next(counter) + i) % 256 for i in range(n))


def keyfile(tmp_path: Path, version: int = 1, key: bytes | None = None) -> KeyfileMasterKey:
    path = tmp_path / f"master-{version}.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key if key is not None else os.urandom(32))
    return KeyfileMasterKey(path, version, random=counter_random())


def test_format_matches_its_documentation(tmp_path: Path) -> None:
    master_key = bytes(range(32))
    ring = MasterKeyRing({1: keyfile(tmp_path, key=master_key)})
    sealed = seal_secret(ring, b"the secret", CONTEXT, random=counter_random())
    # Re-derive the expected bytes from the documented format alone.
    bound = CONTEXT.encode()
    assert bound == b"".join(
        len(p).to_bytes(2, "big") + p
        for p in (b"bastion-vault-v1", b"alice", b"bst_key1", b"bastion-key-hmac")
    )
    data_key = counter_random()(32)
    wrap_nonce = counter_random()(12)  # the keyfile's own random source starts its counter at 1 too
    wrapped = wrap_nonce + AESGCM(master_key).encrypt(wrap_nonce, data_key, b"dek" + bound)
    header = b"BV1" + (1).to_bytes(4, "big") + len(wrapped).to_bytes(2, "big") + wrapped
    rng = counter_random()
    rng(32)
    nonce = rng(12)
    expected = header + nonce + AESGCM(data_key).encrypt(nonce, b"the secret", header + bound)
    assert sealed == expected
    assert open_secret(ring, sealed, CONTEXT) == b"the secret"
    assert master_version(sealed) == 1
    # "BV1", master version 1, a 60-byte wrapped key (12 nonce + 32 key + 16 tag):
    assert sealed.hex()[:18] == "42563100000001003c"


@pytest.fixture
def ring(tmp_path: Path) -> MasterKeyRing:
    return MasterKeyRing({1: keyfile(tmp_path)})


def test_every_flipped_bit_fails_opaquely(ring: MasterKeyRing) -> None:
    sealed = seal_secret(ring, b"s3cret", CONTEXT)
    messages = set()
    for index in range(len(sealed)):
        for bit in (0, 7):
            tampered = bytearray(sealed)
            tampered[index] ^= 1 << bit
            with pytest.raises(VaultError) as caught:
                open_secret(ring, bytes(tampered), CONTEXT)
            messages.add(str(caught.value))
    assert messages == {"the sealed secret could not be opened"}


def test_truncated_and_extended_values_fail(ring: MasterKeyRing) -> None:
    sealed = seal_secret(ring, b"s3cret", CONTEXT)
    for cut in (0, 1, 3, 9, 50, len(sealed) - 17, len(sealed) - 1):
        with pytest.raises(VaultError):
            open_secret(ring, sealed[:cut], CONTEXT)
    with pytest.raises(VaultError):
        open_secret(ring, sealed + b"\x00", CONTEXT)


@pytest.mark.parametrize(
    "other",
    [
        SealContext("bob", "bst_key1", "bastion-key-hmac"),
        SealContext("alice", "bst_key2", "bastion-key-hmac"),
        SealContext("alice", "bst_key1", "venue-credential"),
        SealContext("alic", "ebst_key1", "bastion-key-hmac"),  # the encoding keeps fields apart
    ],
)
def test_a_value_moved_to_another_row_does_not_open(ring: MasterKeyRing, other: SealContext) -> None:
    sealed = seal_secret(ring, b"s3cret", CONTEXT)
    with pytest.raises(VaultError):
        open_secret(ring, sealed, other)


def test_rotation_keeps_old_versions_open(tmp_path: Path) -> None:
    old = keyfile(tmp_path, 1)
    sealed_v1 = seal_secret(MasterKeyRing({1: old}), b"one", CONTEXT)
    ring = MasterKeyRing({1: old, 2: keyfile(tmp_path, 2)})
    sealed_v2 = seal_secret(ring, b"two", CONTEXT)
    assert (master_version(sealed_v1), master_version(sealed_v2)) == (1, 2)
    assert open_secret(ring, sealed_v1, CONTEXT) == b"one"
    assert open_secret(ring, sealed_v2, CONTEXT) == b"two"
    retired = MasterKeyRing({2: ring.current})
    with pytest.raises(VaultError):
        open_secret(retired, sealed_v1, CONTEXT)


def test_a_different_master_key_does_not_open(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    sealed = seal_secret(MasterKeyRing({1: keyfile(first)}), b"x", CONTEXT)
    with pytest.raises(VaultError):
        open_secret(MasterKeyRing({1: keyfile(second)}), sealed, CONTEXT)


@settings(max_examples=50)
@given(st.binary(max_size=2048), st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_round_trip(plaintext: bytes, account: str, owner: str) -> None:
    ring = MasterKeyRing({1: _SHARED_KEY})
    context = SealContext(account, owner, "p")
    assert open_secret(ring, seal_secret(ring, plaintext, context), context) == plaintext


class _StaticKey:
    """A master key held in memory, for the property test only."""

    version = 1

    def __init__(self) -> None:
        self._aead = AESGCM(os.urandom(32))

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return self._aead.decrypt(wrapped[:12], wrapped[12:], context)


_SHARED_KEY = _StaticKey()


def test_keyfile_is_refused_when_others_can_read_it(tmp_path: Path) -> None:
    path = tmp_path / "master-1.key"
    KeyfileMasterKey.create(path)
    assert KeyfileMasterKey(path, 1).version == 1
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="group or others"):
        KeyfileMasterKey(path, 1)
    os.chmod(path, 0o600)
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="32 bytes"):
        KeyfileMasterKey(path, 1)
    with pytest.raises(ConfigError, match="bastion init"):
        KeyfileMasterKey(tmp_path / "missing.key", 1)


def test_keyfile_ring_loads_every_version(tmp_path: Path) -> None:
    for version in (1, 2, 3):
        KeyfileMasterKey.create(tmp_path / f"master-{version}.key")
    ring = open_ring(tmp_path)
    assert (ring.versions, ring.current.version) == ([1, 2, 3], 3)
    with pytest.raises(ConfigError):
        open_ring(tmp_path / "empty")


def test_a_passphrase_sealed_keyfile(tmp_path: Path) -> None:
    path = tmp_path / "master-1.key"
    KeyfileMasterKey.create(path, b"correct horse battery staple")
    data = path.read_bytes()
    assert data.startswith(b"BVKP1")
    assert len(data) == 5 + 3 + 16 + 12 + 32 + 16
    key = KeyfileMasterKey(path, 1, passphrase=b"correct horse battery staple")
    sealed = seal_secret(MasterKeyRing({1: key}), b"x", CONTEXT)
    again = KeyfileMasterKey(path, 1, passphrase=b"correct horse battery staple")
    assert open_secret(MasterKeyRing({1: again}), sealed, CONTEXT) == b"x"
    with pytest.raises(ConfigError, match="BASTION_MASTER_PASSPHRASE"):
        KeyfileMasterKey(path, 1)
    with pytest.raises(ConfigError, match="wrong passphrase"):
        KeyfileMasterKey(path, 1, passphrase=b"Tr0ub4dor&3")
    damaged = tmp_path / "master-2.key"
    damaged.write_bytes(data[:-1])
    os.chmod(damaged, 0o600)
    with pytest.raises(ConfigError, match="damaged"):
        KeyfileMasterKey(damaged, 2, passphrase=b"correct horse battery staple")
