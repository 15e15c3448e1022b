from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bastion.crypto import keys


def test_key_ids_have_prefix_and_checksum() -> None:
    ids = {keys.new_key_id() for _ in range(200)}
    assert len(ids) == 200
    for key_id in ids:
        assert key_id.startswith("bst_")
        assert len(key_id) == 34
        assert keys.is_valid_key_id(key_id)


def test_a_typo_fails_the_checksum() -> None:
    key_id = keys.new_key_id()
    position = 10
    replacement = "A" if key_id[position] != "A" else "B"
    typo = key_id[:position] + replacement + key_id[position + 1 :]
    assert not keys.is_valid_key_id(typo)
    assert not keys.is_valid_key_id(key_id[:-1])
    assert not keys.is_valid_key_id("ak_" + key_id[4:])


def test_public_key_formats(tmp_path: Path) -> None:
    private = keys.generate_ed25519()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ssh = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    for data in (pem, ssh):
        assert keys.raw_public_key(keys.load_ed25519_public(data)) == keys.raw_public_key(
            private.public_key()
        )
    with pytest.raises(keys.KeyFormatError):
        keys.load_ed25519_public(b"not a key")


def test_secret_files_are_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k" / "key.pem"
    keys.write_secret_file(path, b"data")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        keys.write_secret_file(path, b"other")
    assert path.read_bytes() == b"data"
