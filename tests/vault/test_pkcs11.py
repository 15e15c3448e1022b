"""The PKCS#11 provider against a real SoftHSM2 token: seal, open, tamper, non-extractable
keys, and rotation from keyfile to HSM and back while secrets keep opening."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SOFTHSM_LIB = "/usr/lib/softhsm/libsofthsm2.so"
pytestmark = pytest.mark.skipif(
    shutil.which("softhsm2-util") is None or not Path(SOFTHSM_LIB).exists(),
    reason="SoftHSM2 missing (scripts/system-deps.sh installs it)",
)
PIN = "123456"


@pytest.fixture(scope="session")
def new_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], str]]:
    """A fresh SoftHSM2 token per call.  SoftHSM reads its configuration and its token list
    once, when the library first initialises in this process, so the tokens are all created
    up front, under one token directory."""
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)

    def make() -> str:
        label = "bastion-" + secrets.token_hex(4)
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                "87654321",
                "--pin",
                PIN,
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return label

    yield make
    if previous is None:
        del os.environ["SOFTHSM2_CONF"]
    else:
        os.environ["SOFTHSM2_CONF"] = previous


def test_seal_and_open_with_a_key_that_never_leaves_the_token(new_token: Callable[[], str]) -> None:
    from pkcs11 import Attribute
    from pkcs11.exceptions import AttributeSensitive

    from bastion.vault import MasterKeyRing, SealContext, VaultError, open_secret, seal_secret
    from bastion.vault.pkcs11 import Pkcs11Token

    token = Pkcs11Token(SOFTHSM_LIB, new_token(), PIN)
    try:
        key = token.create(1)
        ring = MasterKeyRing({1: key})
        context = SealContext("alice", "vc_1", "venue-credential:paper")
        sealed = seal_secret(ring, b"venue secret", context)
        assert open_secret(ring, sealed, context) == b"venue secret"
        tampered = bytearray(sealed)
        tampered[20] ^= 1  # inside the wrapped data key
        with pytest.raises(VaultError):
            open_secret(ring, bytes(tampered), context)
        with pytest.raises(VaultError):
            open_secret(ring, sealed, SealContext("bob", "vc_1", "venue-credential:paper"))
        with pytest.raises(AttributeSensitive):
            key._key[Attribute.VALUE]
        assert set(token.keys()) == {1}
    finally:
        token.close()


def test_a_missing_or_wrong_pin_fails_at_start(new_token: Callable[[], str]) -> None:
    from bastion.errors import ConfigError
    from bastion.vault.pkcs11 import Pkcs11Token

    label = new_token()
    with pytest.raises(ConfigError, match="BASTION_HSM_PIN"):
        Pkcs11Token(SOFTHSM_LIB, label, "")
    with pytest.raises(ConfigError, match="cannot open"):
        Pkcs11Token(SOFTHSM_LIB, label, "000000")


def test_rotation_between_keyfile_and_hsm(new_token: Callable[[], str], tmp_path: Path) -> None:
    """keyfile -> PKCS#11 -> keyfile with the operator's commands, each in a fresh process (as
    an operator runs them; SoftHSM2 keeps its token list per process), secrets opening throughout."""
    from tests.vault.test_rotation import add_secrets, make_home

    home = make_home(tmp_path)
    secrets_ = asyncio.run(add_secrets(home, 20))  # sealed under keyfile version 1
    config = home / "bastion.toml"
    config.write_text(
        config.read_text()
        .replace('pkcs11_library = ""', f'pkcs11_library = "{SOFTHSM_LIB}"')
        .replace('pkcs11_label = "bastion"', f'pkcs11_label = "{new_token()}"')
    )
    env = os.environ | {"BASTION_HSM_PIN": PIN}

    def bastion(*args: str) -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "bastion", *args, "--home", str(home), "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def all_open() -> list[int]:
        (tmp_path / "secrets.json").write_text(json.dumps(secrets_))
        script = (
            "import asyncio, json, sys; from pathlib import Path; "
            "from tests.vault.test_rotation import check_all_open; "
            f"print(json.dumps(asyncio.run(check_all_open(Path({str(home)!r}), "
            f"json.loads(Path({str(tmp_path / 'secrets.json')!r}).read_text())))))"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
            cwd=Path(__file__).parents[2],
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    to_hsm = bastion("vault", "rotate-master", "--to", "pkcs11")
    assert (to_hsm["target_version"], to_hsm["resealed"], to_hsm["versions_in_use"]) == (2, 22, [2])
    assert bastion("vault", "retire", "--yes")["unused"] == [1]
    assert not (home / "vault" / "master-1.key").exists()  # the secrets now depend on the HSM alone
    assert all_open() == [2]
    back = bastion("vault", "rotate-master", "--to", "keyfile")
    assert (back["target_version"], back["versions_in_use"]) == (3, [3])
    assert bastion("vault", "status") == {"versions": [2, 3], "in_use": [3], "current": 3}
    assert all_open() == [3]
