"""Reference servers, each run as its own process on loopback.

    python -m benchmarks.servers bare --port 0 [--loop uvloop]
    python -m benchmarks.servers socketio --port 0

``bare``: aiohttp's WebSocket with nothing around it. It sends a ``connected`` frame on open (as
qa-ws does, so one load generator drives both), parses each ``chat_message`` with ``json`` and
answers one ``agent_response`` (``reply_to``, ``content``, ``latency_ms``, ``seq``, ``ts``: the
frame qa-ws sends), or streams ``agent_delta`` frames for a ``stream N P`` content.
``socketio``: python-socketio on aiohttp, the peer a Python team would pick: an event handler
for ``chat_message`` that emits ``agent_response`` to the sender. Each prints
``listening on ws://…`` to stderr once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
from aiohttp import web

from benchmarks.wire import parse_stream_request, piece

CONNECTED = '{"type":"system_event","event":"connected"}'


def _ts() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _stream(ws: web.WebSocketResponse, reply_to: str, count: int, pause_s: float) -> str:
    pieces = []
    for _ in range(count):
        if pause_s:
            await asyncio.sleep(pause_s)
        text = piece()
        pieces.append(text)
        delta = {"type": "agent_delta", "reply_to": reply_to, "delta": text, "ts": _ts()}
        await ws.send_str(json.dumps(delta))
    return "".join(pieces)


async def bare_ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    await ws.send_str(CONNECTED)
    seq = 0
    async for msg in ws:
        if msg.type is not aiohttp.WSMsgType.TEXT:
            continue
        began = time.monotonic()
        event = json.loads(msg.data)
        if event.get("type") != "chat_message":
            continue
        content = str(event["content"])
        asked = parse_stream_request(content)
        if asked is not None:
            content = await _stream(ws, event["id"], *asked)
        seq += 1
        answer = {
            "type": "agent_response",
            "reply_to": event["id"],
            "content": content,
            "latency_ms": round((time.monotonic() - began) * 1000, 3),
            "seq": seq,
            "ts": _ts(),
        }
        await ws.send_str(json.dumps(answer))
    return ws


def bare_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/ws", bare_ws)
    return app


def socketio_app() -> web.Application:
    import socketio  # benchmark-only dependency (the perf extra)

    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)

    @sio.on("chat_message")  # type: ignore[untyped-decorator]
    async def chat_message(sid: str, data: dict[str, str]) -> None:
        answer = {"reply_to": data["id"], "content": data["content"], "ts": _ts()}
        await sio.emit("agent_response", answer, to=sid)

    app = web.Application()
    sio.attach(app)
    return app


async def _serve(make_app: Callable[[], web.Application], port: int, path: str) -> None:
    runner = web.AppRunner(make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"listening on ws://127.0.0.1:{bound}{path}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("bare", "socketio"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    raise_nofile()
    if args.kind == "bare":
        coro = _serve(bare_app, args.port, "/ws")
    else:
        coro = _serve(socketio_app, args.port, "/socket.io/?EIO=4&transport=websocket")
    if args.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
