"""The load generator: picows on uvloop, in its own process, one JSON line per result on stdout.

    python -m benchmarks.loadgen chat --url ws://127.0.0.1:P/ws --connections 150 --seconds 3
    python -m benchmarks.loadgen stream --url … --count 100 --pause-ms 0
    python -m benchmarks.loadgen handshake --url … --connections 8 --seconds 2
    python -m benchmarks.loadgen idle --url … --connections 10000  (held until stdin has a line)

picows parses frames in C and calls back without a task or a future per frame, so the client
costs a few microseconds per chat and the server, not the client, is what saturates. Closed
loop: every connection sends its next chat when its previous answer arrives; only answers that
arrive inside the measured window count, and the window starts once every connection is open.
``--server-pid`` adds the server's CPU time per chat (from /proc) to the result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from benchmarks.wire import CHAT_CONTENT, stream_request

_DELTA_TS = re.compile(rb'"delta": ?"(\d+)')
_QAWS_CHAT = b'{"type":"chat_message","id":"c%d-%d","content":"%s"}'
_SIO_CHAT = b'42["chat_message",{"id":"c%d-%d","content":"%s"}]'
CONNECT_CONCURRENCY = 100


@dataclass
class Tally:
    """What one run counts; clients add to it only while ``running``."""

    running: bool = False
    answers: int = 0
    errors: int = 0
    first_error: str = ""
    inflight: int = 0
    deltas: int = 0
    latencies: array[int] = field(default_factory=lambda: array("q"))
    delta_latencies: array[int] = field(default_factory=lambda: array("q"))
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def error(self, text: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or text[:300]


class Client(WSListener):
    """One connection: ready after the server's first frame, then closed-loop chats."""

    def __init__(self, tally: Tally, index: int, socketio: bool, content: bytes) -> None:
        self.tally = tally
        self.index = index
        self.socketio = socketio
        self.template = _SIO_CHAT if socketio else _QAWS_CHAT
        self.content = content
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: WSTransport | None = None
        self.sent = 0
        self.sent_at = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before the first frame"))

    def send_next(self) -> None:
        assert self.transport is not None
        self.sent += 1
        self.tally.inflight += 1
        self.sent_at = time.perf_counter_ns()
        frame = self.template % (self.index, self.sent, self.content)
        self.transport.send(WSMsgType.TEXT, frame)

    def _opening(self, transport: WSTransport, data: bytes) -> None:
        if not self.socketio:
            self.ready.set_result(None)
        elif data.startswith(b"0"):  # Engine.IO open: join the default namespace
            transport.send(WSMsgType.TEXT, b"40")
        elif data.startswith(b"40"):
            self.ready.set_result(None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            if frame.msg_type == WSMsgType.CLOSE and self.tally.running:
                self.tally.error(f"closed by the server: {frame.get_close_code()}")
            return
        data = frame.get_payload_as_bytes()
        tally = self.tally
        if not self.ready.done():
            self._opening(transport, data)
        elif b"agent_delta" in data:
            if tally.running:
                tally.deltas += 1
                found = _DELTA_TS.search(data)
                if found:
                    tally.delta_latencies.append(time.monotonic_ns() - int(found.group(1)))
        elif b"agent_response" in data:
            self._answered(tally, None)
        elif data == b"2":  # Engine.IO ping
            transport.send(WSMsgType.TEXT, b"3")
        elif b'"error"' in data:
            self._answered(tally, data.decode(errors="replace"))

    def _answered(self, tally: Tally, error: str | None) -> None:
        tally.inflight -= 1
        if not tally.running:
            if tally.inflight == 0:
                tally.drained.set()
            return
        if error is None:
            tally.answers += 1
            tally.latencies.append(time.perf_counter_ns() - self.sent_at)
        else:
            tally.error(error)
        self.send_next()


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of a process, or of this one."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: array[int], q: float) -> float:
    """Nearest-rank percentile in milliseconds (values in nanoseconds)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1] / 1e6


async def open_clients(
    args: argparse.Namespace, tally: Tally, count: int, content: bytes
) -> list[Client]:
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None

    async def one(index: int) -> Client:
        async with sem:
            _, listener = await ws_connect(
                lambda: Client(tally, index, args.socketio, content),
                args.url,
                extra_headers=headers,
                websocket_handshake_timeout=20,
            )
            client = cast(Client, listener)
            await asyncio.wait_for(client.ready, 20)
            return client

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def close_all(clients: list[Client]) -> None:
    for client in clients:
        if client.transport is not None:
            client.transport.send_close()
            client.transport.disconnect()
    await asyncio.sleep(0.05)


async def closed_loop(args: argparse.Namespace, content: str) -> dict[str, Any]:
    tally = Tally()
    clients = await open_clients(args, tally, args.connections, content.encode())
    began, own0 = time.perf_counter(), cpu_seconds()
    server0 = cpu_seconds(args.server_pid) if args.server_pid else 0.0
    tally.running = True
    for client in clients:
        client.send_next()
    await asyncio.sleep(args.seconds)
    tally.running = False
    elapsed, own = time.perf_counter() - began, cpu_seconds() - own0
    server = cpu_seconds(args.server_pid) - server0 if args.server_pid else 0.0
    if tally.inflight > 0:  # let the last answers in before closing (bounded)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.drained.wait(), 3)
    await close_all(clients)
    units = tally.deltas if args.mode == "stream" else tally.answers
    return {
        "mode": args.mode,
        "connections": len(clients),
        "seconds": round(elapsed, 3),
        "chats": tally.answers,
        "chats_per_s": round(tally.answers / elapsed, 1),
        "deltas": tally.deltas,
        "deltas_per_s": round(tally.deltas / elapsed, 1),
        "p50_ms": round(percentile(tally.latencies, 50), 3),
        "p99_ms": round(percentile(tally.latencies, 99), 3),
        "delta_latency_p50_ms": round(percentile(tally.delta_latencies, 50), 3),
        "errors": tally.errors,
        "first_error": tally.first_error,
        "client_cpu_pct": round(own / elapsed * 100, 1),
        "server_cpu_us_per_unit": round(server / max(units, 1) * 1e6, 2),
    }


async def handshakes(args: argparse.Namespace) -> dict[str, Any]:
    """Closed loop of connect, first frame, close, by ``--connections`` workers."""
    done = 0
    stop_at = time.monotonic() + args.seconds
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None

    async def worker(index: int) -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            transport, listener = await ws_connect(
                lambda: Client(Tally(), index, args.socketio, b""),
                args.url,
                extra_headers=headers,
                websocket_handshake_timeout=10,
            )
            await asyncio.wait_for(cast(Client, listener).ready, 10)
            transport.send_close()
            transport.disconnect()
            done += 1

    began, own0 = time.perf_counter(), cpu_seconds()
    server0 = cpu_seconds(args.server_pid) if args.server_pid else 0.0
    await asyncio.gather(*(worker(i) for i in range(args.connections)))
    elapsed, own = time.perf_counter() - began, cpu_seconds() - own0
    server = cpu_seconds(args.server_pid) - server0 if args.server_pid else 0.0
    return {
        "mode": "handshake",
        "handshakes": done,
        "handshakes_per_s": round(done / elapsed, 1),
        "client_cpu_pct": round(own / elapsed * 100, 1),
        "server_cpu_us_per_unit": round(server / max(done, 1) * 1e6, 2),
    }


async def hold_idle(args: argparse.Namespace) -> dict[str, Any]:
    """Open the connections, say so, hold them until stdin has a line (at most 120 s)."""
    clients = await open_clients(args, Tally(), args.connections, b"")
    print(json.dumps({"mode": "idle", "ready": len(clients)}), flush=True)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), 120)
    open_now = sum(1 for c in clients if c.transport and not c.transport.is_disconnected)
    await close_all(clients)
    return {"mode": "idle", "held": open_now}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.mode == "chat":
        return await closed_loop(args, CHAT_CONTENT)
    if args.mode == "stream":
        return await closed_loop(args, stream_request(args.count, args.pause_ms))
    if args.mode == "handshake":
        return await handshakes(args)
    return await hold_idle(args)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("chat", "stream", "handshake", "idle"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--socketio", action="store_true", help="speak Engine.IO/Socket.IO")
    parser.add_argument("--connections", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--count", type=int, default=100, help="stream: deltas per chat")
    parser.add_argument("--pause-ms", type=float, default=0.0, help="stream: between deltas")
    parser.add_argument("--server-pid", type=int)
    args = parser.parse_args(argv)
    host = args.url.split("//", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        parser.error("only loopback servers are load-test targets")
    if not 0 < args.seconds <= 120 or not 0 < args.connections <= 20_000:
        parser.error("--seconds must be in (0, 120] and --connections in (0, 20000]")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
