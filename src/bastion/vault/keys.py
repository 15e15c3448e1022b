"""Secrets of Bastion keys (HMAC-SHA256), sealed by the vault to their key's row."""

from __future__ import annotations

from bastion.ports import KeyRecord
from bastion.vault.envelope import SealContext, VaultError, open_secret, seal_secret
from bastion.vault.master import MasterKeyRing

PURPOSE_KEY_HMAC = "bastion-key-hmac"


class VaultKeySecrets:
    """The ``KeySecrets`` port over a master-key ring."""

    def __init__(self, ring: MasterKeyRing) -> None:
        self.ring = ring

    def seal_key_secret(self, account: str, key_id: str, secret: bytes) -> bytes:
        return seal_secret(self.ring, secret, SealContext(account, key_id, PURPOSE_KEY_HMAC))

    def open_key_secret(self, record: KeyRecord) -> bytes:
        if record.secret_sealed is None:
            raise VaultError
        return open_secret(
            self.ring, record.secret_sealed, SealContext(record.account, record.key_id, PURPOSE_KEY_HMAC)
        )
