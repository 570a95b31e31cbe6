"""``make perf-count``: instructions per chat and per handshake, counted, not timed.

    python -m benchmarks.instructions [--seconds 4] [--rounds 2] [--connections 20]
        [--only qa-ws …] [--set NAME:WEBSOCKET_KEY=VALUE[,WEBSOCKET_KEY=VALUE…] …]
        [--against REV …] [--redis] [--min-chat-share S] [--min-handshake-share S]

Each server runs under ``valgrind --tool=callgrind`` with instrumentation off until it listens
(start-up costs nothing), then on. For each round the counters are zeroed, the load generator
runs, and the counters are dumped: the user-space instructions the server executed, divided by
the chats (or handshakes) it answered. Two rounds of one run agree within about 1 %, where timed
rounds on this shared machine swing by 2x, so a change worth a few per cent shows here before a
timed A/B could tell it from noise. Separate runs differ more (up to about 8 % on a busier
machine: fewer frames arrive per loop iteration, so each iteration's own work is shared by fewer
chats): compare settings within one run, each ``--set`` being one more ``qa-ws serve`` with
those configuration variables (``--set log-warning:WEBSOCKET_LOGGING__LEVEL=WARNING``), each
``--against`` one more with the code of a git revision (``--against HEAD~1``: a change's own
before and after, in one run). ``--redis`` puts every qa-ws serve of the run on the Redis store
of a redis-server it starts (redis-server's own instructions are not counted).

``--min-chat-share`` and ``--min-handshake-share`` make it a gate (``make perf-gate``, in CI):
the run fails when ``qa-ws serve``'s share of bare aiohttp's count, on the same loop and in the
same run, falls below the floor. An instruction count hardly depends on the machine's load, so
the gate holds on a loaded CI box where a timed figure would not; the floors sit below today's
shares by more than the run-to-run spread (docs/performance.md).

What it leaves out: the kernel's part of a chat (the ``recv`` and ``send`` system calls, the
same for every server) and cache misses. The ratio to bare aiohttp is therefore harsher than
the CPU-time ratio of ``make perf``, and it says nothing of latency. Servers run one at a time
(counts need no alternation); valgrind runs them about 50 times slower, so rounds are short
and the load is light (20 connections).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import procs
from benchmarks.perf import loadgen, uvloop_installed
from benchmarks.procs import Server
from benchmarks.report import LABELS

START_S = 120.0  # qa-ws's imports under valgrind take about 10 s here; a loaded CI box, more
_TOTAL = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)
_VARIANT = re.compile(r"([a-z0-9][a-z0-9-]{0,30}):(WEBSOCKET_\w+=[^,]*(?:,WEBSOCKET_\w+=[^,]*)*)")


@dataclass
class Counted:
    name: str
    loop: str
    label: str  # the report's row: the server, and the settings of a --set variant
    per_chat: list[float] = field(default_factory=list)
    per_handshake: list[float] = field(default_factory=list)


def valgrind() -> str:
    binary = shutil.which("valgrind")
    if binary is None:
        raise RuntimeError("valgrind is not installed (apt-get install valgrind)")
    return binary


def control(server: Server, *args: str) -> None:
    """``callgrind_control`` on the server (valgrind's own vgdb link to the process)."""
    done = subprocess.run(
        ["callgrind_control", *args, str(server.pid)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"callgrind_control {' '.join(args)} failed: {done.stderr[-500:]}")


def dumped_total(folder: Path, name: str, before: set[Path], timeout_s: float = 30.0) -> int:
    """The instruction total of the dump that appeared since ``before`` was listed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for path in set(folder.glob(f"callgrind.{name}.*")) - before:
            found = _TOTAL.search(path.read_text(errors="replace"))
            if found:
                return int(found.group(1))
        time.sleep(0.1)
    raise RuntimeError(f"callgrind wrote no dump for {name}")


def count(server: Server, folder: Path, mode: str, *extra: str) -> float:
    """Instructions per unit (chat or handshake) over one load-generator run."""
    before = set(folder.glob(f"callgrind.{server.name}.*"))
    control(server, "--zero")
    result = loadgen(server, mode, *extra, timeout=300)
    control(server, "--dump")
    units = int(result["chats"] if mode == "chat" else result["handshakes"])
    if units == 0 or result.get("errors"):
        raise RuntimeError(f"{server.name}: {units} {mode}s, {result.get('errors')} errors")
    return dumped_total(folder, server.name, before) / units


def variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:KEY=VALUE,KEY=VALUE`` (``--set``): a name, and qa-ws configuration variables."""
    found = _VARIANT.fullmatch(text)
    if found is None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME:WEBSOCKET_KEY=VALUE[,WEBSOCKET_KEY=VALUE...], "
            "NAME in lower case letters, digits and dashes"
        )
    pairs = (item.split("=", 1) for item in found.group(2).split(","))
    return f"set-{found.group(1)}", {key: value for key, value in pairs}


def checkout(rev: str, folder: Path) -> tuple[str, dict[str, str], str]:
    """The package as it was at ``rev`` (``git archive``, no worktree to clean up): a run's
    name, the environment that imports it before the working tree's, and its row label."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", "--verify", f"{rev}^{{commit}}"],
        cwd=procs.ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if sha.returncode != 0:
        raise RuntimeError(f"--against {rev}: not a revision of this repository")
    short = sha.stdout.strip()
    tree = folder / f"rev-{short}"
    tree.mkdir(exist_ok=True)  # HEAD and its sha: one tree, measured twice
    archive = subprocess.run(
        ["git", "archive", "--format=tar", short, "qa_ws_cli"],
        cwd=procs.ROOT,
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    env = {"PYTHONPATH": str(tree)}  # before the editable install's path entry
    imported = subprocess.run(  # -P: no script folder first, as for the console script
        [str(procs.BIN / "python"), "-P", "-c", "import qa_ws_cli; print(qa_ws_cli.__file__)"],
        cwd=procs.ROOT,
        env=os.environ | env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not imported.startswith(str(tree)):  # else the row would measure the working tree
        raise RuntimeError(f"--against {rev}: the server would import {imported}")
    return f"rev-{short}", env, f"qa-ws serve at {rev} ({short})"


def start(name: str, folder: Path, env: dict[str, str] | None = None) -> Server:
    prefix = (
        valgrind(),
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={folder}/callgrind.{name}.%p",
    )
    if name.startswith("bare"):
        loop = "uvloop" if name == "bare-uvloop" else "asyncio"
        server = procs.reference(name, "bare", loop, folder, prefix=prefix)
    else:
        loop_env = {"WEBSOCKET_SERVER__EVENT_LOOP": "asyncio"} if name == "qa-ws-asyncio" else {}
        server = procs.qa_ws(name, "echo", folder, extra_env=loop_env | (env or {}), prefix=prefix)
    procs.wait_ready(server, timeout_s=START_S)
    procs.collect_token(server)
    control(server, "--instr=on")
    return server


def measure(
    name: str,
    folder: Path,
    rounds: int,
    seconds: float,
    width: int,
    env: dict[str, str] | None = None,
    label: str | None = None,
) -> Counted:
    server = start(name, folder, env)
    try:
        counted = Counted(name, server.loop(), label or row_label(name, env))
        chat = ("--connections", str(width), "--seconds", str(seconds))
        loadgen(server, "chat", *chat, timeout=300)  # warm-up: first-call paths, caches
        shake = ("--connections", "2", "--seconds", str(seconds))
        for _ in range(rounds):
            counted.per_chat.append(count(server, folder, "chat", *chat))
            counted.per_handshake.append(count(server, folder, "handshake", *shake))
        return counted
    finally:
        server.stop()


SERVERS = ("bare", "qa-ws-asyncio", "bare-uvloop", "qa-ws")


def servers() -> list[str]:
    return [n for n in SERVERS if uvloop_installed() or n in ("bare", "qa-ws-asyncio")]


def render(results: list[Counted], rounds: int, seconds: float, width: int) -> str:
    bare = {c.loop: c for c in results if c.name.startswith("bare")}

    def cell(values: list[float], ref: list[float]) -> str:
        mid, low, high = statistics.median(values), min(values), max(values)
        share = f"{statistics.median(ref) / mid:.2f}" if ref else "-"  # bare not measured
        return f"{mid:,.0f} ({low:,.0f}-{high:,.0f}) | {share}"

    lines = [
        f"## Instructions (valgrind callgrind, user space): {width} connections chatting, "
        f"2 handshaking, {rounds} round(s) of {seconds:g} s per server",
        "| server | loop | instructions per chat (range) | bare's, same loop, as a share "
        "| instructions per handshake (range) | bare's, same loop, as a share |",
        "|---|---|---|---|---|---|",
    ]
    for c in results:
        ref = bare.get(c.loop)
        chat = cell(c.per_chat, ref.per_chat if ref else [])
        shake = cell(c.per_handshake, ref.per_handshake if ref else [])
        lines.append(f"| {c.label} | {c.loop} | {chat} | {shake} |")
    lines.append(
        "\nA share is bare aiohttp's count over this server's: the throughput this server would "
        "reach against bare's if both were bound by user-space instructions alone."
    )
    return "\n".join(lines)


GATED = ("qa-ws", "qa-ws-asyncio")  # the working tree's servers; not --set or --against rows


def gate(results: list[Counted], min_chat: float | None, min_handshake: float | None) -> list[str]:
    """One line per gated share below its floor (none: the gate passes)."""
    bare = {c.loop: c for c in results if c.name.startswith("bare")}
    failures = []
    for c in results:
        if c.name not in GATED:
            continue
        ref = bare.get(c.loop)
        if ref is None:  # a gate that compared nothing must not pass
            failures.append(f"{c.label} ({c.loop}): no bare aiohttp on its loop was counted")
            continue
        for what, floor, own, base in (
            ("chat", min_chat, c.per_chat, ref.per_chat),
            ("handshake", min_handshake, c.per_handshake, ref.per_handshake),
        ):
            share = statistics.median(base) / statistics.median(own)
            if floor is not None and share < floor:
                failures.append(
                    f"{c.label} ({c.loop}): bare's share of a {what}'s instructions is "
                    f"{share:.3f}, below the floor of {floor:.2f}"
                )
    return failures


def _check_gate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    floors = (args.min_chat_share, args.min_handshake_share)
    if all(f is None for f in floors):
        return
    if any(f is not None and not 0 < f <= 1 for f in floors):
        parser.error("a share's floor is in (0, 1]")
    names = set(args.only or servers())
    loops = {"qa-ws": "bare-uvloop", "qa-ws-asyncio": "bare"}
    gated = [n for n in GATED if n in names]
    if not gated or any(loops[n] not in names for n in gated):
        parser.error("a floor needs qa-ws and bare aiohttp on its loop in the run (--only)")


def row_label(name: str, env: dict[str, str] | None) -> str:
    """A server's row: its name's label, or a ``--set`` variant's name and settings."""
    if not env:
        return LABELS.get(name, name)
    settings = ", ".join(f"{k}={v}" for k, v in env.items())
    return f"qa-ws serve, {name.removeprefix('set-')} ({settings})"


def _on_redis(
    run: tuple[str, dict[str, str] | None, str | None], url: str
) -> tuple[str, dict[str, str] | None, str | None]:
    """A qa-ws run (``--redis``) with the store at ``url``, its row saying so; bare as it is."""
    name, env, label = run
    if name.startswith("bare"):
        return run
    label = label or row_label(name, env)  # before the store's URL joins the settings
    return name, (env or {}) | {"WEBSOCKET_STORE__URL": url}, f"{label}, Redis store"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per round and measure")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=20, help="chatting connections")
    parser.add_argument("--only", nargs="+", choices=SERVERS, help="these servers only")
    parser.add_argument(
        "--set",
        action="append",
        type=variant,
        default=[],
        metavar="NAME:KEY=VALUE,…",
        help="one more qa-ws serve with these WEBSOCKET_ variables (repeatable, at most 6)",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="every qa-ws serve (--set and --against too) on the Redis store of a redis-server "
        "this run starts",
    )
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="REV",
        help="one more qa-ws serve with the package of this git revision (at most 2)",
    )
    for what in ("chat", "handshake"):
        parser.add_argument(
            f"--min-{what}-share",
            type=float,
            metavar="S",
            help=f"fail when bare's share of a {what}'s instructions in qa-ws serve is below S",
        )
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 30 or not 0 < args.rounds <= 5 or not 0 < args.connections <= 200:
        parser.error("--seconds in (0, 30], --rounds in (0, 5], --connections in (0, 200]")
    if len(args.set) > 6 or len({name for name, _ in args.set}) != len(args.set):
        parser.error("at most 6 --set, each with a name of its own")
    if len(args.against) > 2:
        parser.error("at most 2 --against")
    _check_gate(args, parser)
    folder = Path(tempfile.mkdtemp(prefix="qa-ws-count-"))
    runs: list[tuple[str, dict[str, str] | None, str | None]] = [
        (n, None, None) for n in args.only or servers()
    ]
    runs += [(name, env, None) for name, env in args.set]
    runs += [checkout(rev, folder) for rev in dict.fromkeys(args.against)]
    width = args.connections
    redis = None
    if args.redis:
        redis, url = procs.redis_server(folder)
        runs = [_on_redis(run, url) for run in runs]
    try:
        results = [
            measure(n, folder, args.rounds, args.seconds, width, env, label)
            for n, env, label in runs
        ]
    finally:
        if redis is not None:
            redis.stop()
    print(render(results, args.rounds, args.seconds, args.connections))
    print(f"\ncallgrind dumps and server logs: {folder}")
    if args.min_chat_share is not None or args.min_handshake_share is not None:
        failures = gate(results, args.min_chat_share, args.min_handshake_share)
        for line in failures:
            print(f"FAIL: {line}")
        if failures:
            raise SystemExit(1)
        print("PASS: every gated share is at or above its floor")


if __name__ == "__main__":
    main()
