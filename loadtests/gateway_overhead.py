"""Gateway vs bare aiohttp: throughput ratio and memory per idle connection.

    python loadtests/gateway_overhead.py [--connections 50] [--seconds 10] [--idle 10000]

Starts two servers as their own processes on loopback: a bare aiohttp WebSocket endpoint
that echoes each text frame, and the full gateway (`qa-ws serve --agent echo`, auth, origin
check, rate limiter, sessions, metrics and logs all on). The same closed-loop driver (one
process, N connections, each sends a message and waits for its answer) runs against each for
a fixed time; then it holds `--idle` connections open and reads each server's resident memory.
It prints the figures and the ratio to the targets (>= 0.75 of bare throughput, <= 25 KiB per
idle connection). It measures; it asserts nothing (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

CHAT = '{"type":"chat_message","id":"%s","content":"how do I test a login form?"}'


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def bare_server(port: int) -> None:
    """The reference: aiohttp's WebSocket echo, nothing else."""

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    print(f"listening on ws://127.0.0.1:{port}/ws", file=sys.stderr, flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(match.group(1)) if match else 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: steadier than wall-clock rates on a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server with its log in a file (as in production), wait for its URL."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, stderr=sink, stdout=subprocess.DEVNULL, env=env, preexec_fn=raise_nofile
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        match = re.search(r"listening on (ws://\S+)", log.read_text(errors="replace"))
        if match:
            return proc, match.group(1)
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"server did not start: {' '.join(cmd)}\n{log.read_text(errors='replace')}")


async def closed_loop(
    url: str, headers: dict[str, str], connections: int, seconds: float, gateway: bool
) -> tuple[int, float]:
    done = 0
    stop_at = 0.0

    async def worker(http: aiohttp.ClientSession, n: int) -> None:
        nonlocal done
        async with http.ws_connect(url, headers=headers, max_msg_size=0) as ws:
            if gateway:
                await ws.receive()  # connected
            i = 0
            while time.monotonic() < stop_at:
                i += 1
                await ws.send_str(CHAT % f"w{n}-{i}")
                msg = await ws.receive()
                if gateway and '"agent_response"' not in msg.data:
                    raise SystemExit(f"unexpected frame: {msg.data[:200]}")
                done += 1

    async with aiohttp.ClientSession() as http:
        stop_at = time.monotonic() + seconds
        began = time.monotonic()
        await asyncio.gather(*(worker(http, n) for n in range(connections)))
        return done, time.monotonic() - began


async def hold_idle(url: str, headers: dict[str, str], count: int, pid: int) -> tuple[int, int]:
    before = rss_kib(pid)
    connector = aiohttp.TCPConnector(limit=0)
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    sem = asyncio.Semaphore(200)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one() -> None:
            async with sem:
                sockets.append(await http.ws_connect(url, headers=headers, heartbeat=None))

        await asyncio.gather(*(one() for _ in range(count)))
        await asyncio.sleep(2.0)
        after = rss_kib(pid)
        for ws in sockets:
            await ws.close()
    return len(sockets), after - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0, help="total per server")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        bare_server(args.bare_server)
        return
    raise_nofile()
    secret = secrets.token_urlsafe(48)
    env = dict(
        os.environ,
        WEBSOCKET_SECRET_KEY=secret,
        WEBSOCKET_SECURITY__RATE_LIMITING__MAX_REQUESTS_PER_MINUTE="100000000",
        WEBSOCKET_SECURITY__RATE_LIMITING__BURST="100000000",
        WEBSOCKET_SERVER__MAX_CONNECTIONS_PER_USER="100000",
        WEBSOCKET_SERVER__MAX_CONNECTIONS="100000",
        WEBSOCKET_LIMITS__MAX_INFLIGHT_PER_CONNECTION="4",
    )
    logs = Path(tempfile.mkdtemp(prefix="qa-ws-overhead-"))
    bare, bare_url = start(
        [sys.executable, __file__, "--bare-server", str(free_port())], env, logs / "bare.log"
    )
    gw, gw_url = start(
        [sys.executable, "-m", "qa_ws_cli", "serve", "--port", "0", "--agent", "echo"],
        env,
        logs / "gateway.log",
    )
    token = subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", "token", "issue", "--sub", "bench", "--ttl", "1h"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    try:
        results: dict[str, float] = {}
        rates: dict[str, list[float]] = {"bare": [], "gateway": []}
        cpu: dict[str, list[float]] = {"bare": [], "gateway": []}
        targets = (("bare", bare_url, {}, False, bare.pid), ("gateway", gw_url, auth, True, gw.pid))
        for _name, url, headers, is_gw, _pid in targets:  # warm up both
            asyncio.run(closed_loop(url, headers, args.connections, 1.0, is_gw))
        for _ in range(args.rounds):  # interleaved, so a noisy neighbour hits both alike
            for name, url, headers, is_gw, pid in targets:
                used = cpu_seconds(pid)
                count, elapsed = asyncio.run(
                    closed_loop(url, headers, args.connections, args.seconds / args.rounds, is_gw)
                )
                rates[name].append(count / elapsed)
                cpu[name].append((cpu_seconds(pid) - used) / max(count, 1) * 1e6)
        ratios = sorted(g / b for g, b in zip(rates["gateway"], rates["bare"], strict=True))
        for name in rates:
            results[f"{name}_msgs_per_s"] = round(statistics.median(rates[name]), 1)
        results["throughput_ratio"] = round(statistics.median(ratios), 3)
        results["throughput_ratio_min"] = round(ratios[0], 3)
        for name in cpu:
            results[f"{name}_cpu_us_per_msg"] = round(statistics.median(cpu[name]), 1)
        results["cpu_ratio"] = round(
            results["bare_cpu_us_per_msg"] / results["gateway_cpu_us_per_msg"], 3
        )
        for name, url, headers, pid in (
            ("bare", bare_url, {}, bare.pid),
            ("gateway", gw_url, auth, gw.pid),
        ):
            held, grew = asyncio.run(hold_idle(url, headers, args.idle, pid))
            results[f"{name}_idle_connections"] = held
            results[f"{name}_kib_per_idle_connection"] = round(grew / max(held, 1), 2)
    finally:
        for proc in (bare, gw):
            proc.terminate()
            proc.wait(15)
    results["target_ratio"] = 0.75
    results["target_kib_per_connection"] = 25
    print(json.dumps(results, indent=2))
    ok_ratio = results["throughput_ratio"] >= 0.75
    ok_mem = results["gateway_kib_per_idle_connection"] <= 25
    print(
        f"throughput: gateway {results['gateway_msgs_per_s']}/s "
        f"vs bare {results['bare_msgs_per_s']}/s "
        f"= {results['throughput_ratio']:.2f} ({'meets' if ok_ratio else 'BELOW'} the 0.75 target)"
    )
    print(
        f"server CPU per message: gateway {results['gateway_cpu_us_per_msg']} us vs bare "
        f"{results['bare_cpu_us_per_msg']} us = {results['cpu_ratio']:.2f} of bare's efficiency"
    )
    print(
        f"memory: {results['gateway_kib_per_idle_connection']} KiB per idle gateway connection "
        f"({'meets' if ok_mem else 'ABOVE'} the 25 KiB target; bare aiohttp: "
        f"{results['bare_kib_per_idle_connection']} KiB)"
    )


if __name__ == "__main__":
    main()
