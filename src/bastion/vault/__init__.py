"""The vault: secrets sealed at rest with envelope encryption.

- ``envelope``: seal and open a secret.  Each secret gets its own random 256-bit data key;
  AES-256-GCM encrypts the secret with associated data that binds it to its row (account,
  id, purpose), so a ciphertext copied to another row does not open.  The data key is
  wrapped by a master key.
- ``master``: the ``MasterKey`` port and its providers: a 0600 keyfile (embedded default);
  PKCS#11 comes with the HSM work.

Every failure to open a sealed secret, whatever the cause (wrong row, flipped bit,
truncation, unknown master-key version), raises the same opaque :class:`VaultError`.
"""

from bastion.vault.envelope import SealContext, VaultError, open_secret, seal_secret
from bastion.vault.master import KeyfileMasterKey, MasterKey, MasterKeyRing

__all__ = [
    "KeyfileMasterKey",
    "MasterKey",
    "MasterKeyRing",
    "SealContext",
    "VaultError",
    "open_secret",
    "seal_secret",
]
