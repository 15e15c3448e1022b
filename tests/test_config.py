from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import DEFAULT_CONFIG, Settings, is_loopback, load_settings
from bastion.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "bastion.toml").write_text(text)
    return tmp_path


def test_the_default_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, DEFAULT_CONFIG)) == Settings()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[auth]\nreplay_window_seconds = 61\n", "replay_window_seconds"),
        ("[auth]\nreplay_window_seconds = 0\n", "replay_window_seconds"),
        ("[server]\nport = 0\n", "port"),
        ("[server]\nmax_body_bytes = 10\n", "max_body_bytes"),
        ("[paper]\nbar_seconds = 0\n", "bar_seconds"),
        ('[log]\nlevel = "loud"\n', "level"),
        ("[auth]\nskip_signatures = true\n", "skip_signatures"),  # no such switch exists
        ("[server\n", "bastion.toml"),
    ],
)
def test_bad_settings_fail_at_start_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_settings(write(tmp_path, text))


def test_missing_home_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bastion init"):
        load_settings(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
