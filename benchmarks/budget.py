"""CPU budget of one chat in ``qa-ws serve``, by stage, two ways.

    python -m benchmarks.budget [--seconds 6] [--rounds 3] [--redis]

``--redis``: the same against ``qa-ws serve`` with the Redis store, on a redis-server started
for it (redis-server's own CPU is reported beside the server's: it shares the machine).

1. Profiler: py-spy samples the server (``--nonblocking``, so it never pauses it) while the
   load generator keeps 150 connections chatting. Each sample is given to the stage of its
   innermost frame that a rule below knows (so pydantic inside ``codec.encode`` counts as
   encode, ``logging`` inside the chat handler as log). A stage's share of the samples times
   the server's CPU time per chat (from /proc, same window) is its microseconds per chat.
2. Toggles: the same load against servers that differ in one feature (the rate limiter off,
   the log at WARNING), in alternating rounds; the difference in server CPU per chat is what
   that feature costs. This cross-checks the profiler's ``limit`` and ``log`` rows.
Flame graphs are not written anywhere in the repo: the raw stacks go to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks import procs
from benchmarks.perf import alternate, loadgen
from benchmarks.procs import Server

# (stage, pattern on py-spy's "Qualified.name (package/module.py:line)"), tried in this order on
# each frame, innermost frame first; the CLI's own frames (the root of every stack) match nothing
RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("log", re.compile(r"\((logging/|qa_ws_cli/server/logs\.py)")),
    ("metrics", re.compile(r"\((prometheus_client/|qa_ws_cli/server/metrics\.py)")),
    ("limit", re.compile(r"\((limits/|qa_ws_cli/server/(memory_)?limits\.py)")),
    ("decode", re.compile(r"^decode_client ")),
    (
        "encode (build and serialize events)",
        re.compile(r"^encode |^BaseModel\.__init__ |\(qa_ws_cli/protocol/events\.py"),
    ),
    ("write", re.compile(r"Transport\.write |\(aiohttp/_websocket/writer|^WebSocketWriter\.")),
    (
        "redis client (redis-py, auto-pipelining)",
        re.compile(r"\((redis/|hiredis|qa_ws_cli/server/redis_batch\.py)"),
    ),
    (
        "session (core, store)",
        re.compile(r"\(qa_ws_cli/server/(session_core|session_store|store|redis_\w+)\.py"),
    ),
    ("agent call", re.compile(r"\(qa_ws_cli/agents/")),
    ("auth", re.compile(r"\((qa_ws_cli/auth/|jwt/)")),
    (
        "socket read, frame parse (aiohttp, the mask check)",
        re.compile(r"_read_ready|\(aiohttp/|\(qa_ws_cli/server/masking\.py"),
    ),
    ("dispatch (chat handler, driver, run)", re.compile(r"\(qa_ws_cli/(?!cli/)")),
)
OTHER = "event loop and the rest"
STAGES = [stage for stage, _ in RULES] + [OTHER]


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, pattern in RULES:
            if pattern.search(frame):
                return stage
    return OTHER


def read_stacks(raw: Path) -> Counter[str]:
    """py-spy's raw (collapsed) format: ``frame;frame;…;frame COUNT`` per line."""
    samples: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples[stage_of(stack.split(";"))] += int(count)
    return samples


def profile(server: Server, seconds: float, out: Path) -> tuple[Counter[str], float, float]:
    """Samples by stage, chats/s and server CPU µs per chat during one profiled window."""
    spy = [str(procs.BIN / "py-spy"), "record", "--pid", str(server.pid)]
    if not os.environ.get("SPY_BLOCKING"):  # SPY_BLOCKING=1: py-spy pauses it, exact stacks
        spy.append("--nonblocking")
    spy += ["--rate", "250", "--format", "raw", "--output", str(out)]
    spy += ["--duration", str(int(seconds) + 2)]
    with subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as sampler:
        time.sleep(1.0)  # py-spy attached
        result = loadgen(server, "chat", "--connections", "150", "--seconds", str(seconds))
        _, err = sampler.communicate(timeout=seconds + 30)
    if not out.exists():
        raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
    return read_stacks(out), result["chats_per_s"], result["server_cpu_us_per_unit"]


def toggles(logs: Path, rounds: int, seconds: float, store_url: str | None) -> dict[str, float]:
    """Median server CPU µs per chat: full, limiter off, log at WARNING."""
    variants: dict[str, dict[str, str]] = {
        "full": {},
        "no-limiter": {"WEBSOCKET_SECURITY__RATE_LIMITING__ENABLED": "false"},
        "log-warning": {"WEBSOCKET_LOGGING__LEVEL": "WARNING"},
    }
    servers = [
        procs.qa_ws(n, "echo", logs, store_url=store_url, extra_env=extra)
        for n, extra in variants.items()
    ]
    try:
        for server in servers:
            procs.wait_ready(server)
            procs.collect_token(server)
        runs = alternate(servers, rounds, "chat", "--connections", "150", "--seconds", str(seconds))
    finally:
        for server in servers:
            server.stop()
    return {n: statistics.median(r["server_cpu_us_per_unit"] for r in runs[n]) for n in runs}


def render(
    samples: Counter[str], rate: float, cpu_us: float, toggled: dict[str, float], store: str = ""
) -> str:
    total = sum(samples.values()) or 1
    lines = [
        f"## CPU per chat in qa-ws serve{store}: {cpu_us:.0f} µs ({rate:,.0f} chats/s while "
        "profiled)",
        "| stage | share of samples | µs per chat |",
        "|---|---|---|",
    ]
    for stage in STAGES:
        share = samples[stage] / total
        lines.append(f"| {stage} | {share:.1%} | {share * cpu_us:.1f} |")
    lines.append(f"\n({total:,} py-spy samples at 250 Hz)\n")
    full = toggled["full"]
    lines += [
        "| toggled | server CPU µs per chat | saved vs full |",
        "|---|---|---|",
        f"| full features | {full:.1f} | - |",
        f"| rate limiter off | {toggled['no-limiter']:.1f} | {full - toggled['no-limiter']:.1f} |",
        f"| log at WARNING | {toggled['log-warning']:.1f} | {full - toggled['log-warning']:.1f} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="profiled window")
    parser.add_argument("--rounds", type=int, default=3, help="toggle rounds")
    parser.add_argument("--redis", action="store_true", help="the Redis store (a redis-server)")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 60 or not 0 < args.rounds <= 10:
        parser.error("--seconds must be in (0, 60] and --rounds in (0, 10]")
    logs = Path(tempfile.mkdtemp(prefix="qa-ws-budget-"))
    redis, store_url = procs.redis_server(logs) if args.redis else (None, None)
    try:
        server = procs.qa_ws("qa-ws", "echo", logs, store_url=store_url)
        try:
            procs.wait_ready(server)
            procs.collect_token(server)
            loadgen(server, "chat", "--connections", "150", "--seconds", "1")  # warm-up
            redis_cpu = redis.cpu_seconds() if redis else 0.0
            samples, rate, cpu_us = profile(server, args.seconds, logs / "stacks.txt")
            redis_cpu = redis.cpu_seconds() - redis_cpu if redis else 0.0
        finally:
            server.stop()
        toggled = toggles(logs, args.rounds, args.seconds / 2, store_url)
    finally:
        if redis:
            redis.stop()
    print(render(samples, rate, cpu_us, toggled, " with the Redis store" if redis else ""))
    if redis:  # the whole profiled window, warm-up of py-spy included: an upper bound
        chats = rate * args.seconds
        print(f"\nredis-server CPU: at most {redis_cpu * 1e6 / max(chats, 1):.0f} µs per chat")
    print(f"\nraw stacks and server logs: {logs}")


if __name__ == "__main__":
    main()
