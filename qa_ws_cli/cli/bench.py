"""``qa-ws bench``: a Locust load test as a CI gate (latency, first delta, errors, lost answers).

Thin on purpose: options -> ``BenchSpec``; ``qa_ws_cli.bench.launch`` starts the servers
(``--serve``) and the load process (or a worker for a master elsewhere); ``outcome`` judges
and writes the reports. Locust and gevent are never imported here (the load runs in its own
process).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.bench import launch
from qa_ws_cli.bench.baseline import BaselineError, load_baseline, parse_tolerance, regressions
from qa_ws_cli.bench.gates import Thresholds, all_passed, default_min_connections
from qa_ws_cli.bench.outcome import Baseline, ReportPaths, judge, run_facts, write_reports
from qa_ws_cli.bench.reports import render_console
from qa_ws_cli.bench.spec import (
    DEFAULT_MESSAGE,
    TOKEN_ENV,
    BenchSpec,
    LoadOptions,
    Scenario,
    check_url,
    parse_stages,
)
from qa_ws_cli.bench.tokens import TokenSource
from qa_ws_cli.cli.bench_paths import report_problems
from qa_ws_cli.cli.common import (
    SIGNING_HINT,
    ConfigOption,
    checked_token,
    default_url,
    err_console,
    fail,
    not_utf8,
)
from qa_ws_cli.client.plain import SHELL_KEY_MISMATCH
from qa_ws_cli.config import Settings, load_settings, parse_duration
from qa_ws_cli.errors import QaWsError

EXIT_GATE_FAILED = 1
EXIT_NOT_RUN = 2
MAX_INSTANCES = 8


def _opt(*names: str, help: str, **kw: Any) -> Any:
    return typer.Option(*names, help=help, **kw)


def command(
    users: Annotated[int, _opt("--users", "-u", help="Virtual users (each its own sub).")] = 150,
    spawn_rate: Annotated[
        float, _opt("--spawn-rate", "-r", help="Users started per second.")
    ] = 50.0,
    duration: Annotated[
        str, _opt("--duration", "-d", help="Length of the load, ramp-up included (30s, 5m).")
    ] = "60s",
    stages: Annotated[
        str | None,
        _opt(
            "--stages", help="Ramps instead of -u/-r/-d: DURATION:USERS,... (30s:50,1m:150,30s:0)."
        ),
    ] = None,
    scenario: Annotated[
        str, _opt("--scenario", "-s", help="chat, idle, burst, churn or reconnect.")
    ] = "chat",
    url: Annotated[
        str | None, _opt("--url", help="Server to load (default from config); loopback only.")
    ] = None,
    serve: Annotated[
        bool, _opt("--serve", help="Start local qa-ws serve instances for the run.")
    ] = False,
    instances: Annotated[
        int, _opt("--instances", help="With --serve: instances (> 1 needs --redis-url).")
    ] = 1,
    redis_url: Annotated[
        str | None, _opt("--redis-url", help="With --serve: the instances' shared Redis store.")
    ] = None,
    agent: Annotated[
        str | None,
        _opt("--agent", "-a", help="Agent of the --serve server (echo; reconnect: demo)."),
    ] = None,
    demo_latency_ms: Annotated[
        float | None, _opt("--demo-latency-ms", help="Latency of the --serve demo agent.")
    ] = None,
    allow_remote: Annotated[
        bool, _opt("--allow-remote", help="Allow a non-loopback target (only servers you run).")
    ] = False,
    token: Annotated[
        str | None,
        _opt(
            "--token",
            envvar=TOKEN_ENV,
            help="One JWT for every user (default: one per user).",
            callback=checked_token,
        ),
    ] = None,
    think_time: Annotated[
        float | None, _opt("--think-time", help="Mean seconds between a user's actions.")
    ] = None,
    message: Annotated[str, _opt("--message", help="What the users ask.")] = DEFAULT_MESSAGE,
    answer_timeout: Annotated[
        float, _opt("--answer-timeout", help="Seconds to wait for an answer (then an error).")
    ] = 10.0,
    burst_size: Annotated[int, _opt("--burst-size", help="Messages per burst (burst).")] = 10,
    processes: Annotated[
        int, _opt("--processes", help="Load processes on this machine (master + N workers).")
    ] = 1,
    master: Annotated[
        bool, _opt("--master", help="Be Locust's master for workers on other machines.")
    ] = False,
    expect_workers: Annotated[
        int, _opt("--expect-workers", help="With --master: workers to wait for.")
    ] = 1,
    master_bind_host: Annotated[
        str, _opt("--master-bind-host", help="With --master: interface workers connect to.")
    ] = "127.0.0.1",
    master_port: Annotated[int, _opt("--master-port", help="The master's port.")] = 5557,
    workers_wait: Annotated[
        str, _opt("--workers-wait", help="With --master: how long to wait for the workers.")
    ] = "60s",
    worker: Annotated[
        bool, _opt("--worker", help="Be a Locust worker of a qa-ws bench --master.")
    ] = False,
    master_host: Annotated[
        str, _opt("--master-host", help="With --worker: the master's address.")
    ] = "127.0.0.1",
    max_p95_ms: Annotated[
        float, _opt("--max-p95-ms", help="Gate: p95 of the main operation.")
    ] = 500.0,
    max_p99_ms: Annotated[
        float | None, _opt("--max-p99-ms", help="Gate: p99 of the main operation.")
    ] = None,
    max_ttft_p95_ms: Annotated[
        float | None, _opt("--max-ttft-p95-ms", help="Gate: p95 time to the first delta.")
    ] = None,
    min_throughput: Annotated[
        float | None, _opt("--min-throughput", help="Gate: answers per second.")
    ] = None,
    max_error_rate: Annotated[
        float, _opt("--max-error-rate", help="Gate: failed / all operations (0.01 = 1 %).")
    ] = 0.0,
    min_connections: Annotated[
        int | None, _opt("--min-connections", help="Gate: connections held at once.")
    ] = None,
    max_lost: Annotated[int, _opt("--max-lost", help="Gate (reconnect): lost answers.")] = 0,
    max_duplicated: Annotated[
        int, _opt("--max-duplicated", help="Gate (reconnect): duplicated answers.")
    ] = 0,
    baseline: Annotated[
        Path | None, _opt("--baseline", help="Gate: compare with an earlier --report-json.")
    ] = None,
    max_regression: Annotated[
        str | None, _opt("--max-regression", help="With --baseline: tolerance per figure (10%).")
    ] = None,
    json_out: Annotated[
        bool, _opt("--json", help="Print the JSON report (qa-ws-bench/2) on stdout.")
    ] = False,
    report_json: Annotated[
        Path | None, _opt("--report-json", help="Write the JSON report to PATH.")
    ] = None,
    report_csv: Annotated[
        str | None, _opt("--report-csv", help="Write PREFIX_latency/gates/errors.csv and Locust's.")
    ] = None,
    report_html: Annotated[
        Path | None,
        _opt("--report-html", help="Write the HTML report (verdict, charts, Locust's)."),
    ] = None,
    report_junit: Annotated[
        Path | None, _opt("--report-junit", help="Write JUnit XML: one test case per gate.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Load the gateway with Locust users and gate on latency, first delta, errors, lost answers.

    Examples:
      qa-ws bench --serve --users 150 --duration 30s
      qa-ws bench --serve --agent demo --max-ttft-p95-ms 300 --report-html reports/bench.html
      qa-ws bench --serve --stages 10s:50,30s:150,10s:0 --report-json now.json
      qa-ws bench --serve --baseline last.json --max-regression 10%
      qa-ws bench --serve --scenario reconnect --users 50 --duration 20s
      qa-ws bench --master --expect-workers 2 --url ws://127.0.0.1:8765/ws
      qa-ws bench --worker --master-host 10.0.0.5

    Exit codes: 0 every gate passed, 1 a gate failed, 2 the run could not happen.
    """
    if worker:
        _run_worker(master_host, master_port, token, allow_remote, config)
        return
    run_id = uuid.uuid4().hex[:8]
    spec = BenchSpec(
        url=url or "",  # or the --serve servers, or the config's, once chosen
        scenario=cast(Scenario, scenario),
        users=users,
        spawn_rate=spawn_rate,
        duration_s=_seconds("--duration", duration),
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
        csv_prefix=str(Path(report_csv).resolve()) if report_csv else None,
        stages=_stages(stages),
        expect_workers=expect_workers if master else 0,
        master_bind_host=master_bind_host,
        master_port=master_port,
        workers_wait_s=_seconds("--workers-wait", workers_wait),
    )
    cli_checks = (
        (max_p95_ms <= 0, "--max-p95-ms must be positive"),
        (not 0 <= max_error_rate <= 1, "--max-error-rate is a fraction between 0 and 1"),
        (min_connections is not None and min_connections < 0, "--min-connections must be >= 0"),
        (max_lost < 0 or max_duplicated < 0, "--max-lost and --max-duplicated must be >= 0"),
        (serve and url is not None, "--serve and --url exclude each other"),
        (not serve and (agent or demo_latency_ms is not None), "--agent needs --serve"),
        (not serve and (instances != 1 or redis_url), "--instances and --redis-url need --serve"),
        (not 1 <= instances <= MAX_INSTANCES, f"--instances must be between 1 and {MAX_INSTANCES}"),
        (instances > 1 and not redis_url, "--instances > 1 needs --redis-url (shared sessions)"),
        (master and serve, "--master needs --url: its workers must reach the server too"),
        (master and processes > 1, "--master and --processes exclude each other"),
        (master and expect_workers < 1, "--expect-workers must be at least 1"),
        (baseline is None and max_regression is not None, "--max-regression needs --baseline"),
    )
    problems = spec.problems() + [text for bad, text in cli_checks if bad]
    if problems:
        fail("; ".join(problems), EXIT_NOT_RUN)
    thresholds = Thresholds(
        max_p95_ms=max_p95_ms,
        max_error_rate=max_error_rate,
        min_connections=min_connections
        if min_connections is not None
        else default_min_connections(spec.scenario, spec.peak_users),
        max_ttft_p95_ms=max_ttft_p95_ms,
        max_p99_ms=max_p99_ms,
        min_throughput=min_throughput,
        max_lost=max_lost,
        max_duplicated=max_duplicated,
    )
    base = _baseline(baseline, max_regression, scenario)
    paths = ReportPaths(report_json, spec.csv_prefix, report_html, report_junit)
    unwritable = report_problems(paths)  # now: after the run it would read as a failed gate
    if unwritable:
        fail("; ".join(unwritable), EXIT_NOT_RUN)
    served = _Served(serve, instances, redis_url, agent, demo_latency_ms, config)
    _run(spec, served, token, allow_remote, thresholds, base, paths, json_out)


class _Served:
    """What --serve starts: instances of qa-ws serve sharing one ephemeral secret."""

    def __init__(
        self,
        serve: bool,
        instances: int,
        redis_url: str | None,
        agent: str | None,
        demo_latency_ms: float | None,
        config: Path | None,
    ) -> None:
        self.serve, self.instances, self.redis_url = serve, instances, redis_url
        self.agent = agent
        self.demo_latency_ms = demo_latency_ms
        self.config = config
        self.servers: list[launch.LocalServer] = []

    def agent_for(self, scenario: str) -> str:
        # a reconnect drops mid-answer: the answer must take a while and stream
        return self.agent or ("demo" if scenario == "reconnect" else "echo")

    def describe(self, scenario: str) -> str:
        if not self.serve:
            return "not served here"
        many = f"{self.instances} instances, " if self.instances > 1 else ""
        return f"served, {many}agent {self.agent_for(scenario)}"

    def start(self, workdir: Path, scenario: str, environ: dict[str, str]) -> list[str]:
        if not self.serve:
            return []
        secret: str | None = None
        for i in range(self.instances):
            server = launch.LocalServer(
                workdir,
                scenario=scenario,
                agent=self.agent_for(scenario),
                demo_latency_ms=self.demo_latency_ms,
                config_file=str(self.config) if self.config else None,
                secret=secret,
                store_url=self.redis_url,
                name=f"server{i}",
            )
            secret = server.secret
            self.servers.append(server)
        environ["WEBSOCKET_SECRET_KEY"] = self.servers[0].secret
        return [_or_fail(server.start) for server in self.servers]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def _seconds(flag: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        fail(f"{flag}: {exc}", EXIT_NOT_RUN)


def _stages(text: str | None) -> list[list[float]] | None:
    if text is None:
        return None
    try:
        return [[seconds, users] for seconds, users in parse_stages(text)]
    except ValueError as exc:
        fail(f"--stages: {exc}", EXIT_NOT_RUN)


def _baseline(path: Path | None, tolerance: str | None, scenario: str) -> Baseline | None:
    if path is None:
        return None
    try:
        return Baseline(path, load_baseline(path, scenario), parse_tolerance(tolerance or "10%"))
    except (BaselineError, ValueError) as exc:
        fail(str(exc), EXIT_NOT_RUN)


def _run(
    spec: BenchSpec,
    served: _Served,
    token: str | None,
    allow_remote: bool,
    thresholds: Thresholds,
    base: Baseline | None,
    paths: ReportPaths,
    json_out: bool,
) -> None:
    launch.raise_nofile_limit()
    environ = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="qa-ws-bench-") as tmp:
        workdir = Path(tmp)
        if paths.html is not None:
            spec = _with(spec, html=str(workdir / "locust.html"))
        try:
            urls = served.start(workdir, spec.scenario, environ)
            spec = _aim(spec, urls, _settings(spec.config_file, environ), token, allow_remote)
            if token:
                environ[TOKEN_ENV] = token
            if spec.csv_prefix:
                Path(spec.csv_prefix).parent.mkdir(parents=True, exist_ok=True)
            _announce(spec, served.describe(spec.scenario))
            started_at = datetime.now(UTC).isoformat(timespec="seconds")
            load = _run_with_progress(spec, workdir, environ)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        finally:
            served.stop()
        if load.raw is None:
            fail(
                f"the load process failed (exit {load.returncode}):\n{launch.tail(load.log)}",
                EXIT_NOT_RUN,
            )
        locust_html = None
        if spec.html and Path(spec.html).exists():
            locust_html = Path(spec.html).read_text(encoding="utf-8")
        run = run_facts(spec, started_at, served.describe(spec.scenario), load.raw)
        _finish(load.raw, spec, run, thresholds, base, paths, json_out, locust_html)


def _with(spec: BenchSpec, **changes: Any) -> BenchSpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)


def _aim(
    spec: BenchSpec, urls: list[str], settings: Settings, token: str | None, allow_remote: bool
) -> BenchSpec:
    """Choose and check the targets; one real connection to each before the load."""
    targets = urls or [spec.url or default_url(settings)]
    for target in targets:
        try:
            check_url(target, allow_remote=allow_remote)
        except ValueError as exc:
            fail(str(exc), EXIT_NOT_RUN)
        _or_fail(lambda: launch.reachable(target))  # noqa: B023 - called at once
        probe_token = token or _mint(settings, f"bench-{spec.load.run_id}-preflight")
        _preflight(target, probe_token, minted=token is None)
    return _with(spec, url=targets[0], urls=targets)


MINTED_WITH_ANOTHER_KEY = f"; the users' tokens are signed {SHELL_KEY_MISMATCH}, or pass --token"


def _preflight(target: str, token: str, *, minted: bool) -> None:
    try:
        launch.preflight(target, token)
    except launch.LaunchError as exc:
        signature = minted and "signature is invalid" in str(exc)
        fail(f"{exc}{MINTED_WITH_ANOTHER_KEY if signature else ''}", EXIT_NOT_RUN)


def _announce(spec: BenchSpec, served: str) -> None:
    shape = (
        f"stages {','.join(f'{s:g}s:{int(u)}' for s, u in spec.stages)}"
        if spec.stages
        else f"{spec.users} users (+{spec.spawn_rate:g}/s) for {spec.duration_s:g} s"
    )
    err_console.print(f"bench: {spec.scenario}, {shape} against {spec.url} ({served})")
    if spec.expect_workers:
        err_console.print(
            f"bench: waiting up to {spec.workers_wait_s:g} s for {spec.expect_workers} "
            f"worker(s) on {spec.master_bind_host}:{spec.master_port} "
            f"(qa-ws bench --worker --master-host <this host> --master-port {spec.master_port})"
        )


def _settings(config: str | None, environ: dict[str, str]) -> Settings:
    try:
        # without a configured key, mint with the one `qa-ws serve --dev` keeps (as send --sub)
        loaded = load_settings(Path(config) if config else None, environ=environ, dev_secret=True)
        return loaded.settings
    except QaWsError as exc:
        fail(exc.message, EXIT_NOT_RUN)
    except UnicodeDecodeError as exc:
        fail(not_utf8(config or "", exc), EXIT_NOT_RUN)


def _mint(settings: Settings, sub: str) -> str:
    try:
        return issue_token(settings, sub, ttl_s=600)[0]
    except QaWsError as exc:
        fail(
            f"cannot mint the users' tokens ({exc.message}); pass --token, or --serve"
            + (SIGNING_HINT if settings.secret() is None else ""),
            EXIT_NOT_RUN,
        )


def _or_fail(step: Any) -> Any:
    try:
        return step()
    except launch.LaunchError as exc:
        fail(str(exc), EXIT_NOT_RUN)


def _run_with_progress(spec: BenchSpec, workdir: Path, environ: dict[str, str]) -> launch.LoadRun:
    """A live status line on a terminal; a line every 5 s in CI logs."""
    last_print = [0.0]
    total = spec.total_seconds

    def describe(p: dict[str, Any]) -> str:
        return (
            f"{p['t']:.0f}/{total:g} s  users {p['users']}/{spec.peak_users}  held {p['held']}  "
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
    run: dict[str, Any],
    thresholds: Thresholds,
    base: Baseline | None,
    paths: ReportPaths,
    json_out: bool,
    locust_html: str | None = None,
) -> None:
    verdict = judge(raw, spec, run, thresholds, base)
    written = write_reports(verdict, paths, raw, locust_html)
    render_console(
        verdict.result,
        verdict.gates,
        title=f"qa-ws bench {spec.scenario}",
        target_users=spec.peak_users,
        file=sys.stderr if json_out else None,
    )
    worse = regressions(verdict.gates)
    if worse:
        err_console.print(f"[bold red]worse than the baseline[/]: {', '.join(worse)}")
    for path in written:
        err_console.print(f"report: {path}", markup=False, highlight=False)
    if json_out:
        sys.stdout.write(json.dumps(verdict.report, indent=2) + "\n")
        sys.stdout.flush()
    if raw.get("aborted") == "interrupted":
        raise typer.Exit(130)
    if verdict.result.unreachable:
        fail(f"no user could connect: {verdict.result.first_connect_error}", EXIT_NOT_RUN)
    raise typer.Exit(0 if all_passed(verdict.gates) else EXIT_GATE_FAILED)


def _run_worker(
    master_host: str, port: int, token: str | None, allow_remote: bool, config: Path | None
) -> None:
    """A Locust worker for ``qa-ws bench --master`` (the spec comes from the master)."""
    environ = dict(os.environ)
    if token:
        environ[TOKEN_ENV] = token
    tokens = TokenSource.from_env(
        environ, config_file=str(config) if config else None, dev_secret=True
    )
    if tokens.fixed is None and not tokens.mints:
        fail(
            "a worker needs --token (or QA_WS_TOKEN) or the server's signing key in "
            "WEBSOCKET_SECRET_KEY (or the development secret of `qa-ws serve --dev`) to mint "
            "its users' tokens",
            EXIT_NOT_RUN,
        )
    err_console.print(f"bench: worker for the master at {master_host}:{port}")
    code = launch.run_worker_process(
        master_host, port, environ, config=config, allow_remote=allow_remote
    )
    raise typer.Exit(0 if code == 0 else EXIT_NOT_RUN)
