"""``make perf``: every server side by side on loopback, in alternating rounds, one table.

    python -m benchmarks.perf [--quick] [--json reports/perf.json]

Servers, each one process: bare aiohttp (asyncio, and uvloop when installed), python-socketio,
``qa-ws serve`` (echo agent, auth on with a minted token, rate limiter on with limits too high
to trigger, sessions, metrics, console log at INFO to a file), the same with the Redis store on
a redis-server the harness starts, and ``qa-ws serve`` with a streaming agent. The load
generator (``benchmarks.loadgen``) is a fresh process per round. Handshakes, chats and
streaming run in rounds A B C … A B C …, so a noisy neighbour hits every server alike; ratios
are taken per round and the median reported. Idle memory comes last, on fresh processes of its
own. It measures and asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import procs, report
from benchmarks.procs import Server

Result = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """How long and how wide each measurement runs."""

    rounds: int = 4
    chat_s: float = 2.5
    chat_connections: int = 150
    stream_rounds: int = 3
    stream_s: float = 2.0
    stream_connections: int = 20
    stream_count: int = 100
    paced_rounds: int = 2
    paced_connections: int = 10
    paced_pause_ms: float = 1.0
    idle: int = 10_000
    handshake_rounds: int = 3
    handshake_s: float = 1.5
    handshake_workers: int = 8
    warmup_s: float = 0.5  # 0: no warm-up round
    idle_hold_s: float = 1.0  # how long the idle connections sit before RSS is read


FULL = Plan()
QUICK = Plan(
    rounds=2, chat_s=0.8, stream_rounds=1, stream_s=0.8, paced_rounds=1, idle=1000,
    handshake_rounds=1, handshake_s=0.8, warmup_s=0.2,
)  # fmt: skip
SMOKE = Plan(
    rounds=1, chat_s=0.3, chat_connections=10, stream_rounds=1, stream_s=0.3,
    stream_connections=4, stream_count=10, paced_rounds=1, paced_connections=2, idle=20,
    handshake_rounds=1, handshake_s=0.3, handshake_workers=2, warmup_s=0, idle_hold_s=0.2,
)  # fmt: skip


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loadgen(server: Server, mode: str, *extra: str, timeout: float = 120) -> Result:
    """One load-generator process against ``server``; its JSON result."""
    cmd = [sys.executable, "-m", "benchmarks.loadgen", mode, "--url", server.url]
    cmd += ["--server-pid", str(server.pid), *extra]
    if server.token:
        cmd += ["--token", server.token]
    if server.socketio:
        cmd.append("--socketio")
    done = subprocess.run(
        cmd, cwd=procs.ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed against {server.name}:\n{done.stderr[-2000:]}")
    result: Result = json.loads(done.stdout.strip().splitlines()[-1])
    if result.get("errors"):
        print(f"  {server.name}: {result['errors']} errors: {result['first_error']}", flush=True)
    return result


def alternate(
    servers: list[Server], rounds: int, mode: str, *extra: str, label: str = ""
) -> dict[str, list[Result]]:
    """``rounds`` rounds of A B C …: one load-generator run per server per round."""
    results: dict[str, list[Result]] = {s.name: [] for s in servers}
    for number in range(rounds):
        for server in servers:
            server.settle()
            results[server.name].append(loadgen(server, mode, *extra))
        print(f"  {label or mode} round {number + 1}/{rounds} done", flush=True)
    return results


def idle_memory(server: Server, count: int, hold_s: float) -> Result:
    """RSS the server gains while ``count`` authenticated connections sit idle."""
    loadgen(server, "handshake", "--connections", "2", "--seconds", "0.2")  # warm code paths
    time.sleep(0.3)
    before = server.rss_kib()
    cmd = [sys.executable, "-m", "benchmarks.loadgen", "idle", "--url", server.url]
    cmd += ["--connections", str(count)]
    if server.token:
        cmd += ["--token", server.token]
    if server.socketio:
        cmd.append("--socketio")
    with subprocess.Popen(
        cmd, cwd=procs.ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        ready = json.loads(holder.stdout.readline() or '{"ready": 0}')
        time.sleep(hold_s)
        after = server.rss_kib()
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(60)
    server.settle()
    if holder.returncode != 0:
        raise RuntimeError(f"the idle holder failed against {server.name}")
    held = int(ready["ready"])
    return {"connections": held, "kib_per_connection": round((after - before) / max(held, 1), 2)}


def start_all(logs: Path) -> tuple[dict[str, Server], list[Server]]:
    """Every server under test, started in parallel; also the helpers (redis)."""
    redis, redis_url = procs.redis_server(logs)
    servers = [procs.reference("bare", "bare", "asyncio", logs)]
    if uvloop_installed():
        servers.append(procs.reference("bare-uvloop", "bare", "uvloop", logs))
    servers += [
        procs.reference("socketio", "socketio", "asyncio", logs),
        procs.qa_ws("qa-ws", "echo", logs),
        procs.qa_ws(
            "qa-ws-asyncio", "echo", logs, extra_env={"WEBSOCKET_SERVER__EVENT_LOOP": "asyncio"}
        ),
        procs.qa_ws("qa-ws-redis", "echo", logs, store_url=redis_url),
        procs.qa_ws("qa-ws-stream", "python:benchmarks.agents:stream_agent", logs),
    ]
    for server in servers:
        procs.wait_ready(server)
        procs.collect_token(server)
    return {s.name: s for s in servers}, [redis]


def measure(by_name: dict[str, Server], plan: Plan) -> dict[str, Any]:
    def pick(*names: str) -> list[Server]:
        return [by_name[n] for n in names if n in by_name]

    out: dict[str, Any] = {"loops": {name: s.loop() for name, s in by_name.items()}}
    print("handshakes ...", flush=True)
    shake = ("--connections", str(plan.handshake_workers), "--seconds", str(plan.handshake_s))
    out["handshake"] = alternate(pick("bare", "qa-ws"), plan.handshake_rounds, "handshake", *shake)
    print("chats ...", flush=True)
    chatters = pick("bare", "bare-uvloop", "socketio", "qa-ws", "qa-ws-asyncio", "qa-ws-redis")
    width = ("--connections", str(plan.chat_connections))
    if plan.warmup_s:
        alternate(chatters, 1, "chat", *width, "--seconds", str(plan.warmup_s), label="warm-up")
    out["chat"] = alternate(chatters, plan.rounds, "chat", *width, "--seconds", str(plan.chat_s))
    print("streaming ...", flush=True)
    streamers = pick("bare", "bare-uvloop", "qa-ws-stream")
    flow = ("--count", str(plan.stream_count), "--pause-ms", "0")
    wide = ("--connections", str(plan.stream_connections), "--seconds", str(plan.stream_s))
    out["stream"] = alternate(streamers, plan.stream_rounds, "stream", *wide, *flow)
    paced = ("--connections", str(plan.paced_connections), "--seconds", str(plan.stream_s))
    pace = ("--count", "20", "--pause-ms", str(plan.paced_pause_ms))
    out["paced"] = alternate(streamers, plan.paced_rounds, "stream", *paced, *pace, label="paced")
    return out


def measure_idle(logs: Path, plan: Plan) -> dict[str, Result]:
    """Idle memory, last and on processes of its own started for it: nothing measured before
    has left freed memory in them to hide what a connection costs, and the 10,000 closes at
    its end cannot disturb another measurement."""
    print("idle memory ...", flush=True)
    folder = logs / "idle"
    folder.mkdir()
    servers = [
        procs.reference("bare", "bare", "asyncio", folder),
        procs.reference("socketio", "socketio", "asyncio", folder),
        procs.qa_ws("qa-ws", "echo", folder),
    ]
    try:
        for server in servers:
            procs.wait_ready(server)
            procs.collect_token(server)
        return {s.name: idle_memory(s, plan.idle, plan.idle_hold_s) for s in servers}
    finally:
        for server in servers:
            server.stop()


def run(plan: Plan, json_path: Path | None = None) -> tuple[dict[str, Any], str]:
    """Start everything, measure, stop everything; the raw results and the printed report."""
    logs = Path(tempfile.mkdtemp(prefix="qa-ws-perf-"))
    began = time.monotonic()
    by_name, helpers = start_all(logs)
    try:
        results = measure(by_name, plan)
    finally:
        for server in [*by_name.values(), *helpers]:
            server.stop()
    results["idle"] = measure_idle(logs, plan)
    results["plan"] = asdict(plan)
    results["wall_s"] = round(time.monotonic() - began, 1)
    results["logs"] = str(logs)
    text = report.render(results)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=1))
    return results, text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short rounds: under a minute")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args(argv)
    _, text = run(QUICK if args.quick else FULL, args.json)
    print(text)


if __name__ == "__main__":
    main()
