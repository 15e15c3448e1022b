"""A bounded flood on loopback: does a legitimate bot keep trading while others abuse the gateway?

    .venv/bin/python bench/flood.py [--seconds 10] [--rate 20] [--abusers 6]

One `bastion serve` over TLS on 127.0.0.1 with its default shield and rate-limit settings.
The legitimate bot (from 127.0.0.2) sends signed market orders at ``--rate`` a second, first
alone (the unloaded baseline), then while abusers, in another process, send as fast as their
connections allow, each from its own loopback address:

- bad signatures under a real key id (127.0.1.x),
- unknown key ids (127.0.2.x),
- a valid key far over its limits (127.0.3.x): correctly signed orders, as fast as it can.

Each run is bounded by ``--seconds`` and every loop stops by itself.  Reported: the abusers'
request rate against the bot's (the target is at least 10×), the bot's successes, and its p99
latency loaded against unloaded (the target is at most 3×).  ``--check`` exits 1 when a
target is missed (``--check-latency`` adds the p99 target; ``tests/e2e/test_flood.py`` runs a
short version without it: timing targets belong to benchmarks, not tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import secrets
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bastion.crypto import keys as keyfmt  # noqa: E402
from bastion.crypto.httpsig import sign_request  # noqa: E402
from bastion.crypto.keys import load_ed25519_private  # noqa: E402


def bastion(home: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args, "--home", str(home)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request_bytes(port: int, key_id: str, private: Any, cid: str, side: str, *, forge: bool = False) -> bytes:
    body = json.dumps(
        {"client_order_id": cid, "symbol": "GOOG", "side": side, "type": "market", "quantity": "1"}
    ).encode()
    authority = f"127.0.0.1:{port}"
    headers = sign_request(
        private_key=private,
        key_id=key_id,
        method="POST",
        url_scheme="https",
        authority=authority,
        path="/v1/orders",
        query="",
        body=body,
        created=int(time.time()),
    )
    if forge:
        headers["signature"] = "bastion=:" + "A" * 86 + "==:"
    head = ["POST /v1/orders HTTP/1.1", f"host: {authority}", "content-type: application/json"]
    head += [f"content-length: {len(body)}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def connect(port: int, source: str, cafile: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = ssl.create_default_context(cafile=str(cafile))
    return await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost", local_addr=(source, 0)
    )


async def bot(
    port: int, key_id: str, private: Any, cafile: Path, rate: float, seconds: float, tag: str
) -> list[tuple[int, float]]:
    reader, writer = await connect(port, "127.0.0.2", cafile)
    results: list[tuple[int, float]] = []
    interval = 1.0 / rate
    start = time.perf_counter()
    n = 0
    try:
        while time.perf_counter() - start < seconds:
            raw = request_bytes(port, key_id, private, f"{tag}-{n}", "buy" if n % 2 == 0 else "sell")
            sent = time.perf_counter()
            status = await exchange(reader, writer, raw)
            results.append((status, time.perf_counter() - sent))
            n += 1
            await asyncio.sleep(max(0.0, start + n * interval - time.perf_counter()))
    finally:
        writer.close()
    return results


def abuse(
    port: int,
    cafile: str,
    victim_key: str,
    greedy_key: str,
    greedy_path: str,
    seconds: float,
    count: int,
    out: str,
) -> None:
    """In its own process: abusers as fast as their connections go, for ``seconds``."""

    statuses: dict[str, int] = {}
    private = load_ed25519_private(Path(greedy_path).read_bytes())

    async def one(kind: str, source: str) -> int:
        sent = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            try:
                reader, writer = await connect(port, source, Path(cafile))
            except OSError:
                await asyncio.sleep(0.05)
                continue
            try:
                while time.perf_counter() < deadline:
                    cid = secrets.token_hex(6)
                    if kind == "bad-signature":
                        raw = request_bytes(port, victim_key, private, cid, "buy", forge=True)
                    elif kind == "unknown-key":
                        raw = request_bytes(port, keyfmt.new_key_id(), private, cid, "buy")
                    else:
                        raw = request_bytes(port, greedy_key, private, cid, "buy")
                    status = await exchange(reader, writer, raw)
                    statuses[f"{kind} {status}"] = statuses.get(f"{kind} {status}", 0) + 1
                    sent += 1
            except (OSError, asyncio.IncompleteReadError, ValueError):
                pass
            finally:
                writer.close()
        return sent

    async def run() -> None:
        kinds = ("bad-signature", "unknown-key", "over-limit")
        tasks = [one(kinds[i % 3], f"127.0.{1 + i % 3}.{1 + i // 3}") for i in range(count)]
        totals = await asyncio.gather(*tasks)
        summary["sent"] = sum(totals)

    summary: dict[str, int] = {}
    asyncio.run(run())
    Path(out).write_text(json.dumps({"sent": summary["sent"], "seconds": seconds, "statuses": statuses}))


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--abusers", type=int, default=6)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if an order failed or the flood was thin"
    )
    parser.add_argument("--check-latency", action="store_true", help="with --check: also the p99 target")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-flood-") as tmp:
        home = Path(tmp) / "home"
        bastion(home, "init")
        port = free_port()
        config = home / "bastion.toml"
        config.write_text(
            config.read_text()
            .replace("port = 8443", f"port = {port}")
            .replace('level = "info"', 'level = "warning"')
            # The bot buys and sells 1 GOOG at market ten times a second: a loop to the fraud
            # stage, which would hold it. This bench is about the shield; the fraud stage runs
            # every rule but does not act (its own bench is bench/detection.py).
            .replace("alert_at = 0.5 ", "alert_at = 50.0 ")
            .replace("hold_at = 1.0 ", "hold_at = 60.0 ")
            .replace("deny_at = 1.5 ", "deny_at = 70.0 ")
            .replace("halt_at = 2.5 ", "halt_at = 80.0 ")
        )
        bastion(home, "accounts", "create", "flood")
        create = (
            "keys",
            "create",
            "--account",
            "flood",
            "--scopes",
            "read,trade,cancel",
            "--generate",
            "--json",
        )
        good = json.loads(bastion(home, *create))
        greedy = json.loads(bastion(home, *create))
        victim = json.loads(bastion(home, *create))
        cafile = home / "tls" / "cert.pem"
        server = subprocess.Popen(
            [sys.executable, "-m", "bastion", "serve", "--home", str(home)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    import socket

                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            key_path = load_ed25519_private(Path(good["private_key_path"]).read_bytes())
            asyncio.run(bot(port, good["key_id"], key_path, cafile, args.rate, 2.0, "warm"))
            alone = asyncio.run(bot(port, good["key_id"], key_path, cafile, args.rate, args.seconds, "alone"))
            out = Path(tmp) / "abusers.json"
            abusers = multiprocessing.get_context("spawn").Process(
                target=abuse,
                args=(
                    port,
                    str(cafile),
                    victim["key_id"],
                    greedy["key_id"],
                    greedy["private_key_path"],
                    args.seconds + 1,
                    args.abusers,
                    str(out),
                ),
            )
            abusers.start()
            time.sleep(1.0)  # let the flood build up (and the first bans fall)
            loaded = asyncio.run(
                bot(port, good["key_id"], key_path, cafile, args.rate, args.seconds - 1, "loaded")
            )
            abusers.join(timeout=args.seconds + 30)
            flood = json.loads(out.read_text())
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                raise
    bot_rate = len(loaded) / (args.seconds - 1)
    abuse_rate = flood["sent"] / flood["seconds"]
    ok_alone = sum(1 for s, _ in alone if s == 201)
    ok_loaded = sum(1 for s, _ in loaded if s == 201)
    p_alone, p_loaded = p99([t for _, t in alone]) * 1000, p99([t for _, t in loaded]) * 1000
    print(f"bot rate {bot_rate:.1f}/s, abusers {abuse_rate:,.0f}/s ({abuse_rate / bot_rate:.0f}x the bot)")
    print("| measure | bot alone | bot under flood | ratio |")
    print("|---|---|---|---|")
    print(f"| orders sent | {len(alone)} | {len(loaded)} | |")
    print(f"| orders that succeeded (201) | {ok_alone} | {ok_loaded} | |")
    print(
        f"| median latency, ms | {statistics.median(t for _, t in alone) * 1000:.1f} | "
        f"{statistics.median(t for _, t in loaded) * 1000:.1f} | |"
    )
    print(f"| p99 latency, ms | {p_alone:.1f} | {p_loaded:.1f} | {p_loaded / p_alone:.2f} |")
    print()
    print("| abuser | answer | count |")
    print("|---|---|---|")
    for key, count in sorted(flood["statuses"].items()):
        kind, status = key.rsplit(" ", 1)
        print(f"| {kind} | {status} | {count:,} |")
    if args.check:
        failed = []
        if ok_loaded != len(loaded) or ok_alone != len(alone):
            failed.append("a legitimate order failed")
        if abuse_rate < 10 * bot_rate:
            failed.append("the flood was under 10x the bot's rate")
        if args.check_latency and p_loaded > 3 * p_alone:
            failed.append("p99 under flood over 3x")
        if failed:
            raise SystemExit("; ".join(failed))


if __name__ == "__main__":
    main()
