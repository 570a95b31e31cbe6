"""``qa-ws bench``: a Locust load test as a CI gate (p95 latency, errors, connections held).

Thin on purpose: options -> ``BenchSpec``; ``qa_ws_cli.bench.launch`` starts the server
(``--serve``) and the load process; ``gates`` and ``reports`` judge and write. Locust and
gevent are never imported here (the load runs in its own process).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.bench import launch
from qa_ws_cli.bench.gates import (
    BenchResult,
    Thresholds,
    all_passed,
    default_min_connections,
    evaluate,
)
from qa_ws_cli.bench.reports import build_report, render_console, write_csv, write_json, write_junit
from qa_ws_cli.bench.spec import (
    DEFAULT_MESSAGE,
    TOKEN_ENV,
    BenchSpec,
    LoadOptions,
    Scenario,
    check_url,
)
from qa_ws_cli.cli.common import ConfigOption, default_url, err_console, fail
from qa_ws_cli.config import Settings, load_settings, parse_duration
from qa_ws_cli.errors import QaWsError

EXIT_GATE_FAILED = 1
EXIT_NOT_RUN = 2


def command(
    users: Annotated[
        int, typer.Option("--users", "-u", help="Virtual users (each its own connection and sub).")
    ] = 150,
    spawn_rate: Annotated[
        float, typer.Option("--spawn-rate", "-r", help="Users started per second.")
    ] = 50.0,
    duration: Annotated[
        str,
        typer.Option("--duration", "-t", help="Length of the load, ramp-up included (30s, 5m)."),
    ] = "60s",
    scenario: Annotated[
        str, typer.Option("--scenario", "-s", help="chat, idle, burst or churn.")
    ] = "chat",
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Server to load (default from config); loopback only unless --allow-remote.",
        ),
    ] = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve", help="Start a local qa-ws serve for the run (ephemeral port and secret)."
        ),
    ] = False,
    agent: Annotated[
        str | None,
        typer.Option("--agent", "-a", help="Agent of the --serve server (default echo)."),
    ] = None,
    demo_latency_ms: Annotated[
        float | None, typer.Option("--demo-latency-ms", help="Latency of the --serve demo agent.")
    ] = None,
    allow_remote: Annotated[
        bool,
        typer.Option("--allow-remote", help="Allow a non-loopback --url (only servers you run)."),
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar=TOKEN_ENV, help="One JWT for every user (default: mint one per user)."
        ),
    ] = None,
    think_time: Annotated[
        float | None,
        typer.Option(
            "--think-time", help="Mean seconds between a user's actions (default per scenario)."
        ),
    ] = None,
    message: Annotated[
        str, typer.Option("--message", help="What the users ask.")
    ] = DEFAULT_MESSAGE,
    answer_timeout: Annotated[
        float,
        typer.Option(
            "--answer-timeout", help="Seconds to wait for an answer before counting an error."
        ),
    ] = 10.0,
    burst_size: Annotated[
        int, typer.Option("--burst-size", help="Messages per burst (burst scenario).")
    ] = 10,
    processes: Annotated[
        int,
        typer.Option("--processes", help="Load processes (Locust master + N workers when > 1)."),
    ] = 1,
    max_p95_ms: Annotated[
        float, typer.Option("--max-p95-ms", help="Gate: p95 latency of the main operation.")
    ] = 500.0,
    max_error_rate: Annotated[
        float, typer.Option("--max-error-rate", help="Gate: failed / all operations (0.01 = 1 %).")
    ] = 0.0,
    min_connections: Annotated[
        int | None,
        typer.Option(
            "--min-connections",
            help="Gate: connections held at once (default: all users; churn: off).",
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the result as JSON (schema qa-ws-bench/1).")
    ] = None,
    csv_prefix: Annotated[
        str | None,
        typer.Option(
            "--csv", help="Write PREFIX_latency/gates/errors.csv and Locust's PREFIX_stats*.csv."
        ),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write Locust's HTML report with its charts.")
    ] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write JUnit XML: one test case per gate.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Load the gateway with Locust users and gate on p95 latency, errors and connections.

    Examples:
      qa-ws bench --serve --users 150 --duration 30s
      qa-ws bench --url ws://127.0.0.1:8765/ws --scenario idle --users 1000 --spawn-rate 200
      qa-ws bench --serve --agent demo --demo-latency-ms 800   # fails the p95 gate

    Exit codes: 0 every gate passed, 1 a gate failed, 2 the run could not happen.
    """
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        fail(f"--duration: {exc}", EXIT_NOT_RUN)
    run_id = uuid.uuid4().hex[:8]
    spec = BenchSpec(
        url="",  # known once the server is chosen (or started)
        scenario=cast(Scenario, scenario),
        users=users,
        spawn_rate=spawn_rate,
        duration_s=seconds,
        processes=processes,
        load=LoadOptions(
            think_time_s=think_time,
            answer_timeout_s=answer_timeout,
            burst_size=burst_size,
            message=message,
            run_id=run_id,
        ),
        config_file=str(config) if config else None,
        mint_tokens=token is None,
        html=str(html.resolve()) if html else None,
        csv_prefix=str(Path(csv_prefix).resolve()) if csv_prefix else None,
    )
    cli_checks = (
        (max_p95_ms <= 0, "--max-p95-ms must be positive"),
        (not 0 <= max_error_rate <= 1, "--max-error-rate is a fraction between 0 and 1"),
        (min_connections is not None and min_connections < 0, "--min-connections must be >= 0"),
        (serve and url is not None, "--serve and --url exclude each other"),
        (not serve and (agent or demo_latency_ms is not None), "--agent needs --serve"),
    )
    problems = spec.problems() + [text for bad, text in cli_checks if bad]
    if problems:
        fail("; ".join(problems), EXIT_NOT_RUN)
    launch.raise_nofile_limit()
    environ = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="qa-ws-bench-") as tmp:
        workdir = Path(tmp)
        server = None
        if serve:
            server = launch.LocalServer(
                workdir,
                scenario=scenario,
                agent=agent or "echo",
                demo_latency_ms=demo_latency_ms,
                config_file=str(config) if config else None,
            )
            environ["WEBSOCKET_SECRET_KEY"] = server.secret
        try:
            settings = _settings(config, environ)
            if server is not None:
                url = _or_fail(server.start)
            target = url or default_url(settings)
            try:
                check_url(target, allow_remote=allow_remote)
            except ValueError as exc:
                fail(str(exc), EXIT_NOT_RUN)
            _or_fail(lambda: launch.reachable(target))
            probe_token = token or _mint(settings, f"bench-{run_id}-preflight")
            _or_fail(lambda: launch.preflight(target, probe_token))
            if token:
                environ[TOKEN_ENV] = token
            spec = dataclasses.replace(spec, url=target)
            for path in (html, Path(csv_prefix) if csv_prefix else None):
                if path is not None:
                    path.resolve().parent.mkdir(parents=True, exist_ok=True)
            served = f"served, agent {agent or 'echo'}" if serve else "not served here"
            err_console.print(
                f"bench: {scenario}, {users} users (+{spawn_rate:g}/s) for "
                f"{seconds:g} s against {target} ({served})"
            )
            started_at = datetime.now(UTC).isoformat(timespec="seconds")
            load = _run_with_progress(spec, workdir, environ, seconds)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        finally:
            if server is not None:
                server.stop()
    if load.raw is None:
        fail(
            f"the load process failed (exit {load.returncode}):\n{launch.tail(load.log)}",
            EXIT_NOT_RUN,
        )
    _finish(
        load.raw,
        spec,
        started_at,
        served,
        max_p95_ms,
        max_error_rate,
        min_connections,
        json_path,
        csv_prefix,
        junit,
    )


def _settings(config: Path | None, environ: dict[str, str]) -> Settings:
    try:
        return load_settings(config, environ=environ).settings
    except QaWsError as exc:
        fail(exc.message, EXIT_NOT_RUN)


def _mint(settings: Settings, sub: str) -> str:
    try:
        return issue_token(settings, sub, ttl_s=600)[0]
    except QaWsError as exc:
        fail(
            f"cannot mint the users' tokens ({exc.message}); pass --token, or --serve", EXIT_NOT_RUN
        )


def _or_fail(step: Any) -> Any:
    try:
        return step()
    except launch.LaunchError as exc:
        fail(str(exc), EXIT_NOT_RUN)


def _run_with_progress(
    spec: BenchSpec, workdir: Path, environ: dict[str, str], seconds: float
) -> launch.LoadRun:
    """A live status line on a terminal; a line every 5 s in CI logs."""
    last_print = [0.0]

    def describe(p: dict[str, Any]) -> str:
        return (
            f"{p['t']:.0f}/{seconds:g} s  users {p['users']}/{spec.users}  held {p['held']}  "
            f"connects {p['connects']}  errors {p['errors']}"
        )

    if err_console.is_terminal:
        with err_console.status("starting the load…") as status:
            return launch.run_load_process(
                spec, workdir, environ, on_progress=lambda p: status.update(describe(p))
            )

    def log_line(p: dict[str, Any]) -> None:
        if time.monotonic() - last_print[0] >= 5.0:
            last_print[0] = time.monotonic()
            err_console.print(describe(p), markup=False)

    return launch.run_load_process(spec, workdir, environ, on_progress=log_line)


def _finish(
    raw: dict[str, Any],
    spec: BenchSpec,
    started_at: str,
    served: str,
    max_p95_ms: float,
    max_error_rate: float,
    min_connections: int | None,
    json_path: Path | None,
    csv_prefix: str | None,
    junit: Path | None,
) -> None:
    result = BenchResult.from_raw(
        raw,
        scenario=spec.scenario,
        load_seconds=float(raw.get("load_seconds", 0.0)),
        processes=spec.processes,
    )
    if min_connections is None:
        min_connections = default_min_connections(spec.scenario, spec.users)
    gates = evaluate(result, Thresholds(max_p95_ms, max_error_rate, min_connections))
    run = {
        "scenario": spec.scenario,
        "url": spec.url,
        "users": spec.users,
        "spawn_rate": spec.spawn_rate,
        "duration_s": spec.duration_s,
        "think_time_s": spec.load.think(spec.scenario),
        "processes": spec.processes,
        "target": served,
        "started_at": started_at,
        "aborted": raw.get("aborted"),
    }
    if json_path is not None:
        write_json(json_path, build_report(result, gates, run))
    if csv_prefix is not None:
        write_csv(csv_prefix, result, gates)
    if junit is not None:
        write_junit(junit, result, gates, run)
    render_console(result, gates, title=f"qa-ws bench {spec.scenario}", target_users=spec.users)
    if raw.get("aborted") == "interrupted":
        raise typer.Exit(130)
    if result.unreachable:
        fail(f"no user could connect: {result.first_connect_error}", EXIT_NOT_RUN)
    raise typer.Exit(0 if all_passed(gates) else EXIT_GATE_FAILED)
