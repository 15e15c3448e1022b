"""Gateway overhead: the full chain (G) against a bare pass-through (P) on the same stack.

    .venv/bin/python bench/overhead.py [--rounds 6] [--requests 1500] [--concurrency 8]

G and P run as separate `bench/_server.py` processes on 127.0.0.1 (plain HTTP, so TLS cost
does not hide the gateway's), each with its own fresh home and the same paper venue.  Rounds
alternate between them and each round sends the same kind of signed order requests (market
IOC on GOOG, buy and sell alternating), so the machine's noise falls on both alike.  Server
CPU per request comes from /proc/<pid>/stat (all threads, including SQLite's).

A third process (T) runs the full chain with each stage wrapped in a CPU timer, at
concurrency 1, to split the overhead by stage.  Signature verification alone is timed
in this process on the same requests.  Figures are ratios and differences from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.crypto import httpsig
from bastion.crypto.keys import load_ed25519_private

ROOT = Path(__file__).resolve().parent.parent
BENCH_POLICY = {
    "symbols": ["BTC-USD", "EUR-USD", "GOOG"],
    "max_order_quantity": "100",
    "max_order_notional": "1000000",
    "max_open_orders": 1000,
    "max_position": "1000",
    "max_daily_notional": "1000000000",
    "max_daily_loss": "1000000000",
    "price_band_pct": "10",
    "orders_per_second": "100000",
    "max_order_to_trade_ratio": "100",
    "rate_limit": {"per_second": "100000", "burst": 100000},
}
# One client address sends everything: the per-address and per-account limits are raised to
# what a busy installation would set, so the stages run but never refuse.
BENCH_SETTINGS = (
    ("ip_requests_per_second = 100.0", "ip_requests_per_second = 1000000.0"),
    ("ip_burst = 200\n", "ip_burst = 1000000\n"),
    ("max_in_flight = 256", "max_in_flight = 100000"),
    ("account_per_second = 50.0", "account_per_second = 1000000.0"),
    ("account_burst = 100\n", "account_burst = 1000000\n"),
    ("ip_per_second = 50.0", "ip_per_second = 1000000.0"),
    ("ip_burst = 100\n", "ip_burst = 1000000\n"),
    # The fraud stage runs every rule on every order but never acts: a bench bot sends
    # thousands of market orders a minute, most of which the paper venue's depth cannot fill.
    ("alert_at = 0.5 ", "alert_at = 50.0 "),
    ("hold_at = 1.0 ", "hold_at = 60.0 "),
    ("deny_at = 1.5 ", "deny_at = 70.0 "),
    ("halt_at = 2.5 ", "halt_at = 80.0 "),
)
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bastion(home: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "bastion", *args, "--home", str(home)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


@dataclass
class Server:
    mode: str
    home: Path
    port: int
    key_id: str
    key_path: Path
    hmac_key_id: str
    hmac_secret: str
    process: subprocess.Popen[bytes]
    stats: Path | None = None

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK


def start(mode: str, root: Path) -> Server:
    home = root / mode
    bastion(home, "init")
    config = home / "bastion.toml"
    text = (
        config.read_text()
        .replace("replay_window_seconds = 5", "replay_window_seconds = 60")
        .replace('level = "info"', 'level = "warning"')
    )
    for old, new in BENCH_SETTINGS:
        text = text.replace(old, new)
    config.write_text(text)
    bastion(home, "accounts", "create", "bench")
    # Limits the bench never reaches, so the risk stage does all of its work on every order.
    policy = root / f"{mode}.policy.json"
    policy.write_text(json.dumps(BENCH_POLICY))
    bastion(home, "policy", "set", "bench", "--file", str(policy))
    create = ("keys", "create", "--account", "bench", "--scopes", "read,trade,cancel", "--json")
    key = json.loads(bastion(home, *create, "--generate"))
    hmac_key = json.loads(bastion(home, *create, "--alg", "hmac"))
    port = free_port()
    stats = root / f"{mode}.stats.json" if mode == "T" else None
    cmd = [sys.executable, str(ROOT / "bench" / "_server.py"), str(home), str(port), mode]
    if stats:
        cmd.append(str(stats))
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=(root / f"{mode}.err").open("wb"))
    server = Server(
        mode,
        home,
        port,
        key["key_id"],
        Path(key["private_key_path"]),
        hmac_key["key_id"],
        hmac_key["secret"],
        process,
        stats,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{mode} server did not start; see {root / (mode + '.err')}")


def presign(server: Server, count: int, tag: str, *, hmac: bool = False) -> list[bytes]:
    key = None if hmac else load_ed25519_private(server.key_path.read_bytes())
    secret = server.hmac_secret.encode() if hmac else None
    authority = f"127.0.0.1:{server.port}"
    requests = []
    now = int(time.time())
    for n in range(count):
        side = "buy" if n % 2 == 0 else "sell"
        body = json.dumps(
            {
                "client_order_id": f"{tag}-{n}",
                "symbol": "GOOG",
                "side": side,
                "type": "market",
                "quantity": "1",
            }
        ).encode()
        headers = httpsig.sign_request(
            private_key=key,
            hmac_secret=secret,
            key_id=server.hmac_key_id if hmac else server.key_id,
            method="POST",
            url_scheme="http",
            authority=authority,
            path="/v1/orders",
            query="",
            body=body,
            created=now,
        )
        head = [
            "POST /v1/orders HTTP/1.1",
            f"host: {authority}",
            "content-type: application/json",
            f"content-length: {len(body)}",
        ] + [f"{k}: {v}" for k, v in headers.items()]
        requests.append(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return requests


async def load(
    port: int, requests: list[bytes], concurrency: int
) -> tuple[float, list[float], dict[int, int]]:
    queue = list(reversed(requests))
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                raw = queue.pop()
                sent = time.perf_counter()
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - sent)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, statuses


def signature_verify_cpu_us(server: Server, samples: int = 300, *, hmac: bool = False) -> float:
    """CPU of what only signature verification does: parse headers, build the base, verify
    (Ed25519, or HMAC-SHA256 with the secret already open)."""
    requests = presign(server, samples, "sigbench-hmac" if hmac else "sigbench", hmac=hmac)
    raw_public = load_ed25519_private(server.key_path.read_bytes()).public_key().public_bytes_raw()
    secret = server.hmac_secret.encode()
    parsed_requests = []
    for raw in requests:
        head, _ = raw.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")[1:]
        parsed_requests.append({k.lower(): [v] for k, v in (line.split(": ", 1) for line in lines)})
    start = time.process_time()
    for headers in parsed_requests:
        parsed = httpsig.parse_signature(headers)
        view = httpsig.RequestView("POST", "http", f"127.0.0.1:{server.port}", "/v1/orders", "", headers)
        base = httpsig.signature_base(parsed.components, parsed.params_text, view)
        if hmac:
            httpsig.verify_hmac_sha256(secret, base, parsed.signature)
        else:
            httpsig.verify_ed25519(Ed25519PublicKey.from_public_bytes(raw_public), base, parsed.signature)
    return (time.process_time() - start) / samples * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timed-requests", type=int, default=800)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "overhead.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        root = Path(tmp)
        servers = {mode: start(mode, root) for mode in ("G", "P")}
        try:
            for mode, server in servers.items():  # warm up: imports, caches, SQLite pages
                asyncio.run(load(server.port, presign(server, 300, f"warm{mode}"), args.concurrency))
            series = ("G", "G-hmac", "P")  # G-hmac: the same G server, requests signed with an HMAC key
            results: dict[str, list[tuple[float, float, list[float]]]] = {name: [] for name in series}
            for round_ in range(args.rounds):
                order = series[round_ % 3 :] + series[: round_ % 3]
                for mode in order:
                    server = servers[mode.split("-")[0]]
                    requests = presign(server, args.requests, f"r{round_}{mode}", hmac=mode == "G-hmac")
                    cpu0 = server.cpu_seconds()
                    wall, latencies, statuses = asyncio.run(load(server.port, requests, args.concurrency))
                    cpu = server.cpu_seconds() - cpu0
                    bad = {s: c for s, c in statuses.items() if s not in (200, 201)}
                    if bad:
                        raise SystemExit(f"{mode} round {round_}: unexpected statuses {bad}")
                    results[mode].append((len(requests) / wall, cpu / len(requests) * 1e6, latencies))
            sig_us = signature_verify_cpu_us(servers["G"])
            hmac_sig_us = signature_verify_cpu_us(servers["G"], hmac=True)
        finally:
            for server in servers.values():
                server.process.send_signal(signal.SIGTERM)
                server.process.wait(timeout=30)

        timed = start("T", root)
        try:
            asyncio.run(load(timed.port, presign(timed, 200, "warmT"), 1))
            asyncio.run(load(timed.port, presign(timed, args.timed_requests, "t"), 1))
        finally:
            timed.process.send_signal(signal.SIGTERM)
            timed.process.wait(timeout=30)
        assert timed.stats is not None
        stage_cpu = json.loads(timed.stats.read_text())

    def median(mode: str, i: int) -> float:
        return statistics.median(r[0] if i == 0 else r[1] for r in results[mode])  # rps or CPU

    def p99(mode: str) -> float:
        latencies = sorted(x for r in results[mode] for x in r[2])
        return latencies[int(len(latencies) * 0.99)] * 1000

    g_rps, p_rps = median("G", 0), median("P", 0)
    g_cpu, p_cpu = median("G", 1), median("P", 1)
    skip = 200  # the warm-up requests of T
    stage_us = {
        name: statistics.mean(v[skip:] if len(v) > skip else v) / 1000 for name, v in stage_cpu.items()
    }
    summary = {
        "rounds": args.rounds,
        "requests_per_round": args.requests,
        "concurrency": args.concurrency,
        "G_rps": g_rps,
        "P_rps": p_rps,
        "G_over_P_rps": g_rps / p_rps,
        "G_cpu_us_per_request": g_cpu,
        "P_cpu_us_per_request": p_cpu,
        "G_over_P_cpu": g_cpu / p_cpu,
        "overhead_cpu_us": g_cpu - p_cpu,
        "signature_verification_cpu_us": sig_us,
        "overhead_without_signature_verification_cpu_us": g_cpu - p_cpu - sig_us,
        "G_p99_ms": p99("G"),
        "P_p99_ms": p99("P"),
        "G_hmac_rps": median("G-hmac", 0),
        "G_hmac_cpu_us_per_request": median("G-hmac", 1),
        "G_hmac_over_P_cpu": median("G-hmac", 1) / p_cpu,
        "hmac_signature_verification_cpu_us": hmac_sig_us,
        "hmac_overhead_without_signature_verification_cpu_us": median("G-hmac", 1) - p_cpu - hmac_sig_us,
        "stage_cpu_us_at_concurrency_1": stage_us,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2))

    print(f"rounds={args.rounds} requests/round={args.requests} concurrency={args.concurrency}")
    print("| measure | G (gateway) | P (pass-through) | G/P |")
    print("|---|---|---|---|")
    print(f"| requests per second (median of rounds) | {g_rps:,.0f} | {p_rps:,.0f} | {g_rps / p_rps:.2f} |")
    print(f"| server CPU per request, µs (median) | {g_cpu:,.0f} | {p_cpu:,.0f} | {g_cpu / p_cpu:.2f} |")
    print(f"| p99 latency, ms | {p99('G'):.1f} | {p99('P'):.1f} | {p99('G') / p99('P'):.2f} |")
    h_rps, h_cpu = median("G-hmac", 0), median("G-hmac", 1)
    print(f"| HMAC key: requests per second | {h_rps:,.0f} | {p_rps:,.0f} | {h_rps / p_rps:.2f} |")
    print(f"| HMAC key: server CPU per request, µs | {h_cpu:,.0f} | {p_cpu:,.0f} | {h_cpu / p_cpu:.2f} |")
    h_p99 = p99("G-hmac")
    print(f"| HMAC key: p99 latency, ms | {h_p99:.1f} | {p99('P'):.1f} | {h_p99 / p99('P'):.2f} |")
    print()
    print(
        f"gateway CPU overhead per order (G - P): Ed25519 {g_cpu - p_cpu:,.0f} µs, "
        f"HMAC {h_cpu - p_cpu:,.0f} µs"
    )
    print(
        f"of which signature verification (parse, base, verify): Ed25519 {sig_us:,.0f} µs, "
        f"HMAC {hmac_sig_us:,.0f} µs (the HMAC secret's vault open is counted as overhead)"
    )
    print(
        f"overhead of everything but signature verification: Ed25519 {g_cpu - p_cpu - sig_us:,.0f} µs, "
        f"HMAC {h_cpu - p_cpu - hmac_sig_us:,.0f} µs"
    )
    print()
    print("| stage (concurrency 1) | process CPU, µs per request | of which the loop thread's |")
    print("|---|---|---|")
    own = {k.removesuffix(" (loop thread)"): v for k, v in stage_us.items() if k.endswith(" (loop thread)")}
    for name, value in sorted(stage_us.items(), key=lambda kv: -kv[1]):
        if not name.endswith(" (loop thread)"):
            thread = f"{own[name]:,.0f}" if name in own else ""
            print(f"| {name} | {value:,.0f} | {thread} |")


if __name__ == "__main__":
    main()
