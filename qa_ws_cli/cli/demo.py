"""``qa-ws demo``: the plan's demos, played against a local server started for the occasion.

The server is a real ``qa-ws serve`` process (not an in-process app) so the demo shows what a
user would see: its own ephemeral secret, a config of defaults only (no ``WEBSOCKET_*`` from
the caller's environment or ``configs/`` leaks in), and a SIGTERM drain at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.bench.launch import LaunchError, LocalServer
from qa_ws_cli.bench.samples import percentile as nearest_rank
from qa_ws_cli.client.connection import ClientOptions, QaWsClient
from qa_ws_cli.config import Settings, load_settings
from qa_ws_cli.errors import HandshakeRefused, QaWsError

QUESTIONS = (
    "how do I test a login form?",
    "what should an API contract test cover?",
    "how do I tame a flaky test?",
    "what goes into a release smoke suite?",
)
MARK = "\u203a"  # a quieter speaker mark than ">"
console = Console(highlight=False)
err_console = Console(highlight=False, stderr=True)


def demo_settings(secret: str) -> Settings:
    return load_settings(
        Path(os.devnull), {"security": {"secret_key": secret}}, environ={}
    ).settings


def percentile(samples: list[float], p: float) -> float:
    """Nearest rank, as ``qa-ws bench`` reports it: a real sample, never an interpolation."""
    return nearest_rank(sorted(samples), p)


@contextlib.asynccontextmanager
async def _connected(url: str, token: str | None) -> AsyncIterator[QaWsClient]:
    """Unlike ``async with QaWsClient``, also closes the HTTP session when connect fails."""
    client = QaWsClient(ClientOptions(url=url, token=token, connect_timeout=10.0))
    try:
        await client.connect()
        yield client
    finally:
        await client.close()


def _ok(flag: bool) -> Text:
    return Text("✓", style="bold green") if flag else Text("✗", style="bold red")


# -- the demos ---------------------------------------------------------------------------------


async def basic_chat(url: str, settings: Settings) -> bool:
    token = issue_token(settings, "demo-user", ttl_s=600)[0]
    async with _connected(url, token) as client:
        event = client.connected
        assert event is not None
        console.print(f"connected as [bold]{event.user}[/], session {event.session_id}")
        question = QUESTIONS[0]
        console.print(Text.assemble((f"you {MARK} ", "bold cyan"), question))
        console.print(Text(f"agent {MARK} ", style="bold magenta"), end="")
        pieces: list[str] = []

        def on_delta(piece: str) -> None:
            pieces.append(piece)
            console.print(piece, end="", markup=False, soft_wrap=True)

        answer = await client.ask(question, timeout=30.0, on_delta=on_delta)
        if not pieces:  # an agent that answers at once (echo) sends no deltas: show the answer
            console.print(answer.content, end="", markup=False, soft_wrap=True)
        console.print()
        rtt = await client.ping()
        streamed = f"{len(pieces)} deltas" if pieces else "answered at once (no deltas)"
        console.print(
            Text(
                f"{streamed}, agent_response after {answer.latency_ms:.0f} ms; ping {rtt:.2f} ms",
                style="dim",
            )
        )
        return bool(answer.content) and (not pieces or "".join(pieces) == answer.content)


async def authentication(url: str, settings: Settings) -> bool:
    other = demo_settings(secrets.token_urlsafe(48))
    cases: list[tuple[str, str | None, str]] = [
        ("no token", None, "401 missing_token"),
        ("token signed with another key", issue_token(other, "demo-user")[0], "401 invalid_token"),
        (
            "expired token",
            issue_token(settings, "demo-user", ttl_s=60, now=time.time() - 3600)[0],
            "401 token_expired",
        ),
        ("valid token", issue_token(settings, "demo-user", ttl_s=600)[0], "connected"),
    ]
    all_ok = True
    for label, token, expected in cases:
        try:
            async with _connected(url, token) as client:
                got = "connected"
                user = client.connected.user if client.connected else "?"
                detail = f"as {user}, session {client.session_id}"
        except HandshakeRefused as exc:
            got = f"{exc.status} {exc.error}"
            detail = exc.message.removeprefix("handshake refused: ")
        ok = got == expected
        all_ok &= ok
        console.print(
            Text.assemble(
                _ok(ok),
                " ",
                (label, "bold"),
                f": expected {expected}, got ",
                (got, "green" if got == "connected" else "yellow"),
            )
        )
        console.print(Text("    " + detail, style="dim"))
    return all_ok


@dataclass
class StressResult:
    latencies_ms: list[float]
    errors: Counter[str]
    wall_s: float


async def _stress_user(
    url: str, settings: Settings, n: int, questions: int, result: StressResult
) -> None:
    token = issue_token(settings, f"stress-{n:03d}", ttl_s=600)[0]
    try:
        async with _connected(url, token) as client:
            for i in range(questions):
                started = time.perf_counter()
                try:
                    await client.ask(QUESTIONS[(n + i) % len(QUESTIONS)], timeout=30.0)
                except QaWsError as exc:
                    result.errors[exc.code] += 1
                    continue
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
    except QaWsError as exc:
        result.errors[exc.code] += questions


async def stress(url: str, settings: Settings, clients: int, questions: int) -> bool:
    result = StressResult([], Counter(), 0.0)
    started = time.perf_counter()
    with console.status(f"{clients} clients asking {questions} questions each…"):
        await asyncio.gather(
            *(_stress_user(url, settings, n, questions, result) for n in range(clients))
        )
    result.wall_s = time.perf_counter() - started
    lat = result.latencies_ms
    expected = clients * questions
    table = Table(box=None, show_header=False, padding=(0, 2))
    table.add_row("answers", f"{len(lat)} / {expected}")
    table.add_row("errors", ", ".join(f"{k}: {v}" for k, v in result.errors.items()) or "0")
    if lat:
        table.add_row("latency p50", f"{percentile(lat, 50):.0f} ms")
        table.add_row("latency p95", f"{percentile(lat, 95):.0f} ms")
        table.add_row("latency max", f"{max(lat):.0f} ms")
    table.add_row(
        "throughput", f"{len(lat) / result.wall_s:.1f} answers/s over {result.wall_s:.2f} s"
    )
    console.print(table)
    return len(lat) == expected and not result.errors


async def _step(title: str, play: Callable[[], Awaitable[bool]]) -> bool:
    console.print(Rule(f"[bold]{title}[/]", align="left"))
    try:
        ok = await asyncio.wait_for(play(), 120.0)
    except (QaWsError, TimeoutError) as exc:
        message = exc.message if isinstance(exc, QaWsError) else "the step took over 120 s"
        console.print(Text.assemble(("error: ", "bold red"), message))
        ok = False
    console.print(Text.assemble(_ok(ok), f" {title}"))
    return ok


async def play_all(url: str, settings: Settings, clients: int, questions: int) -> dict[str, bool]:
    return {
        "basic chat": await _step("1 · basic chat", lambda: basic_chat(url, settings)),
        "authentication": await _step(
            "2 · authentication: refused, then accepted", lambda: authentication(url, settings)
        ),
        "stress": await _step(
            f"3 · stress: {clients} clients x {questions} questions",
            lambda: stress(url, settings, clients, questions),
        ),
    }


def command(
    clients: Annotated[
        int, typer.Option("--clients", min=1, max=500, help="Concurrent clients in the stress run.")
    ] = 50,
    questions: Annotated[
        int, typer.Option("--questions", min=1, max=50, help="Questions each stress client asks.")
    ] = 2,
    demo_latency_ms: Annotated[
        float, typer.Option("--demo-latency-ms", min=0, help="Latency of the demo agent.")
    ] = 200.0,
    agent: Annotated[
        str, typer.Option("--agent", "-a", help="Agent spec for the server (as in serve).")
    ] = "demo",
) -> None:
    """Start a local server with the demo agent and play the demos: a streamed chat, refused
    and accepted authentication, and a small stress run; then stop the server with SIGTERM.

    Exit code 0 when every step passed, 1 otherwise.

    Examples:
      qa-ws demo
      qa-ws demo --clients 200 --questions 5 --demo-latency-ms 50
      qa-ws demo -a echo
    """
    with tempfile.TemporaryDirectory(prefix="qa-ws-demo-") as tmp:
        server = LocalServer(
            Path(tmp),
            scenario="chat",
            agent=agent,
            demo_latency_ms=demo_latency_ms,
            config_file=os.devnull,
        )
        try:
            server.start(timeout=20.0)
        except LaunchError:
            lines = [line for line in server.output().splitlines() if line.strip()]
            last = lines[-1].removeprefix("error: ") if lines else "no output"
            err_console.print(
                Text.assemble(("error: ", "bold red"), f"the demo server did not start: {last}")
            )
            raise typer.Exit(1) from None
        settings = demo_settings(server.secret)
        console.print(f"[bold green]server[/] {server.url} (agent: {agent})")
        try:
            results = asyncio.run(play_all(server.url, settings, clients, questions))
        except KeyboardInterrupt:
            server.stop()
            console.print("interrupted")
            raise typer.Exit(130) from None
        console.print(Rule("[bold]shutdown[/]", align="left"))
        code = server.stop()
        results["shutdown"] = code == 0
        console.print(
            Text.assemble(_ok(code == 0), f" server drained and stopped (exit code {code})")
        )
    failed = [name for name, ok in results.items() if not ok]
    if failed:
        console.print(Text.assemble(("demo failed: ", "bold red"), ", ".join(failed)))
        raise typer.Exit(1)
    console.print("[bold green]all demos passed[/]")
