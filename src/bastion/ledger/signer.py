"""The ledger's Ed25519 signing key: created once, its private half sealed by the vault (so it
lives under the keyfile or PKCS#11 master key and is re-sealed by ``vault rotate-master``),
opened in memory by the process that signs tree heads."""

from __future__ import annotations

from datetime import datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bastion.ledger.heads import SignedTreeHead, sign_head
from bastion.store.repos import SqlLedgerStore, ledger_key_context
from bastion.vault.envelope import open_secret, seal_secret
from bastion.vault.master import MasterKeyRing


class LedgerSigner:
    def __init__(self, key: Ed25519PrivateKey, version: int) -> None:
        self._key = key
        self.version = version
        self.public_key: Ed25519PublicKey = key.public_key()

    def sign(self, tree_size: int, root_hash: bytes, timestamp_us: int) -> SignedTreeHead:
        return sign_head(self._key, tree_size, root_hash, timestamp_us, self.version)

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


async def load_signer(store: SqlLedgerStore, ring: MasterKeyRing, now: datetime) -> LedgerSigner:
    """The newest ledger key, created (and stored sealed) when there is none."""
    stored = await store.ledger_keys()
    if stored:
        version, _public, sealed = stored[-1]
        raw = open_secret(ring, sealed, ledger_key_context(version))
        return LedgerSigner(Ed25519PrivateKey.from_private_bytes(raw), version)
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    sealed = seal_secret(ring, raw, ledger_key_context(1))
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    await store.add_ledger_key(1, public, sealed, now)
    return await load_signer(store, ring, now)  # read back: another process may have won the race


async def public_keys(store: SqlLedgerStore) -> dict[int, Ed25519PublicKey]:
    """Every ledger public key by version (verification needs nothing secret)."""
    return {v: Ed25519PublicKey.from_public_bytes(public) for v, public, _ in await store.ledger_keys()}
