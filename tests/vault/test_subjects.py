"""Per-subject data keys: sealing personal data, opening it, and shredding it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bastion.vault import KeyfileMasterKey, MasterKeyRing, VaultError
from bastion.vault.subjects import ERASED, SubjectKeys

NOW = datetime(2026, 1, 5, tzinfo=UTC)


class MemorySubjectKeys:
    def __init__(self) -> None:
        self.rows: dict[str, bytes | None] = {}

    async def load(self, subject: str) -> tuple[bool, bytes | None]:
        return (subject in self.rows), self.rows.get(subject)

    async def create(self, subject: str, sealed: bytes, now: datetime) -> bool:
        if subject in self.rows:
            return False
        self.rows[subject] = sealed
        return True

    async def erase(self, subject: str, now: datetime) -> bool:
        had = self.rows.get(subject) is not None
        self.rows[subject] = None
        return had


@pytest.fixture
def keys(tmp_path: Path) -> tuple[SubjectKeys, MemorySubjectKeys]:
    path = tmp_path / "master-1.key"
    KeyfileMasterKey.create(path)
    store = MemorySubjectKeys()
    return SubjectKeys(store, MasterKeyRing({1: KeyfileMasterKey(path, 1)})), store


async def test_a_value_seals_opens_and_is_bound_to_its_subject_and_field(
    keys: tuple[SubjectKeys, MemorySubjectKeys],
) -> None:
    subjects, store = keys
    key = await subjects.key("account:alice", NOW)
    token = subjects.seal(key, "account:alice", "client_ip", "203.0.113.7")
    assert token.startswith("pd1:") and "203.0.113.7" not in token
    assert subjects.seal(key, "account:alice", "client_ip", "203.0.113.7") != token  # fresh nonce
    assert await subjects.open("account:alice", "client_ip", token, NOW) == "203.0.113.7"
    other = await subjects.key("account:bob", NOW)
    assert other is not key
    for subject, field in (("account:bob", "client_ip"), ("account:alice", "label")):
        with pytest.raises(VaultError):
            await subjects.open(subject, field, token, NOW)
    assert store.rows["account:alice"] is not None and b"203.0.113.7" not in store.rows["account:alice"]


async def test_erasure_shreds_and_nothing_new_is_kept(keys: tuple[SubjectKeys, MemorySubjectKeys]) -> None:
    subjects, _ = keys
    token = subjects.seal(
        await subjects.key("account:carol", NOW), "account:carol", "client_ip", "198.51.100.1"
    )
    assert await subjects.erase("account:carol", NOW)
    assert await subjects.open("account:carol", "client_ip", token, NOW) == ERASED
    assert (
        subjects.seal(await subjects.key("account:carol", NOW), "account:carol", "client_ip", "x") == ERASED
    )
    fresh = SubjectKeys(keys[1], subjects._ring)  # another process: the key is gone for it too
    assert await fresh.key("account:carol", NOW) is None
