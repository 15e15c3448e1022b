"""Scan a directory for embedded credentials with detect-secrets plus Bastion's plugins."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.core.secrets_collection import SecretsCollection
from detect_secrets.settings import transient_settings

_PLUGINS_FILE = Path(__file__).with_name("plugins.py")
_SKIP_DIRS = {
    ".git",
    ".venv",
    "venv",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "build",
    "dist",
    ".bastion",
}
_MAX_FILE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Finding:
    path: str
    line: int
    type: str


def _files(root: Path) -> list[str]:
    if root.is_file():
        return [str(root.resolve())]
    out = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(part in _SKIP_DIRS or part.endswith(".egg-info") for part in parts):
            continue
        if path.is_file() and not path.is_symlink() and path.stat().st_size <= _MAX_FILE_BYTES:
            out.append(str(path.resolve()))
    return out


def scan(root: Path) -> list[Finding]:
    """Every finding under ``root`` (file, line, type), sorted; never the secret itself.
    Lines marked ``pragma: allowlist secret`` are skipped (detect-secrets' convention)."""
    mapping: dict[str, type] = get_mapping_from_secret_type_to_class()
    builtin = [{"name": plugin.__name__} for plugin in mapping.values()]
    ours = [
        {"name": name, "path": f"file://{_PLUGINS_FILE}"}
        for name in ("BastionSecretDetector", "BastionKeyIdDetector", "ExchangeCredentialDetector")
    ]
    get_mapping_from_secret_type_to_class.cache_clear()  # computed above without our plugins
    with transient_settings({"plugins_used": builtin + ours}):
        collection = SecretsCollection(root="")  # absolute paths: detect-secrets joins root onto them
        collection.scan_files(*_files(root), num_processors=1)
        base = root.resolve() if root.is_dir() else root.resolve().parent
        findings = {
            Finding(str(Path(filename).resolve().relative_to(base)), secret.line_number or 0, secret.type)
            for filename, secret in collection
        }
    return sorted(findings, key=lambda f: (f.path, f.line, f.type))
