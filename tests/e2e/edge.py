"""Bring up the edge profile for tests: nginx + ModSecurity + CRS (deploy/nginx) on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
CRS_RULES = Path("/usr/share/modsecurity-crs/rules")
MODULE = Path("/usr/lib/nginx/modules/ngx_http_modsecurity_module.so")


def render(template: Path, target: Path, values: dict[str, str]) -> Path:
    text = template.read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    assert "{{" not in text, f"unrendered placeholder in {target}"
    target.write_text(text)
    return target


@contextmanager
def nginx_edge(
    prefix: Path,
    *,
    port: int,
    upstream_ports: list[int],
    bastion_cert: Path,
    paranoia: int = 1,
    rate: int = 1000,
    burst: int = 2000,
    connections: int = 256,
) -> Iterator[subprocess.Popen[bytes]]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists() or not MODULE.exists() or not CRS_RULES.is_dir():
        pytest.skip(
            "nginx, its ModSecurity module or the CRS is missing (scripts/system-deps.sh installs them)"
        )
    for sub in ("tmp", "modsec-tmp", "modsec-data"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    rules = render(
        DEPLOY / "modsecurity" / "main.conf.template",
        prefix / "modsecurity.conf",
        {
            "PREFIX": str(prefix),
            "PARANOIA": str(paranoia),
            "CRS_RULES": str(CRS_RULES),
            "EXCLUSIONS": str(DEPLOY / "modsecurity" / "bastion-exclusions.conf"),
        },
    )
    conf = render(
        DEPLOY / "bastion.conf.template",
        prefix / "nginx.conf",
        {
            "USER": "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
            "PREFIX": str(prefix),
            "LISTEN": f"127.0.0.1:{port}",
            "TLS_CERT": str(bastion_cert),
            "TLS_KEY": str(bastion_cert.with_name("key.pem")),
            "UPSTREAMS": " ".join(f"server 127.0.0.1:{p};" for p in upstream_ports),
            "BASTION_CA": str(bastion_cert),
            "MODSEC_RULES": str(rules),
            "REQ_RATE": str(rate),
            "REQ_BURST": str(burst),
            "CONN_PER_IP": str(connections),
        },
    )
    check = subprocess.run([nginx, "-t", "-c", str(conf), "-p", str(prefix)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(prefix)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        raise AssertionError(f"nginx did not start: {(prefix / 'error.log').read_text()}")
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=15)
