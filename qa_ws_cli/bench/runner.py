"""The load process: ``python -m qa_ws_cli.bench.runner run|worker ...``.

``qa-ws bench`` starts it as a child so that Locust's gevent monkey-patching (done when
``locust`` is imported, first thing below) never touches the CLI or the server. ``run``
drives the test headless with a local runner, or as Locust's master over ``--processes``
workers (``worker`` mode, the same module started once per extra core) or over
``expect_workers`` workers started elsewhere (``qa-ws bench --worker``). Those get the spec
from the master, inside Locust's own spawn message (``parsed_options.qa_ws_spec``). With
``stages`` the user count follows a ``LoadTestShape``. When the load has stopped it writes
the raw measurements as JSON (``--result``) and, when asked, Locust's HTML report and CSV
files. Progress goes to stdout, one ``PROGRESS {json}`` line a second.

Exit codes: 0 a result was written (whatever it says), 3 the test could not be set up.
"""

from __future__ import annotations

# isort: off
from locust.env import Environment  # first: this import monkey-patches the interpreter
# isort: on

import argparse
import csv
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from locust import argument_parser, stats
from locust.html import get_html_report
from locust.runners import MasterRunner, Runner
from locust.shape import LoadTestShape

from qa_ws_cli.bench.hooks import STOP_MESSAGE, BenchState, install, listen
from qa_ws_cli.bench.launch import raise_nofile_limit
from qa_ws_cli.bench.scenarios import SCENARIO_USERS
from qa_ws_cli.bench.spec import PROGRESS_PREFIX, BenchSpec, check_url
from qa_ws_cli.bench.tokens import TokenSource

EXIT_SETUP = 3
WORKERS_READY_S = 30.0
FINALS_WAIT_S = 15.0
QUIT_WAIT_S = 10.0  # Locust waits for every user greenlet to die; ours do within a second
log = logging.getLogger("qa_ws.bench")


class SetupError(Exception):
    """The test could not start; the message is for the user."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class StagesShape(LoadTestShape):
    """k6's ``stages`` as a Locust shape: linear ramps from one target to the next.

    Each stage is handed to Locust once, as (its target, the rate that reaches it just as the
    stage ends); Locust's own spawning draws the ramp. None after the last stage ends the test.
    """

    def __init__(self, stages: list[list[float]]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.stages = [(float(seconds), int(users)) for seconds, users in stages]

    def tick(self) -> tuple[int, float] | None:
        elapsed, end, previous = self.get_run_time(), 0.0, 0  # type: ignore[no-untyped-call]
        for seconds, users in self.stages:
            end += seconds
            if elapsed < end:
                rate = abs(users - previous) / seconds
                return users, max(rate, 0.1)
            previous = users
        return None


def _environment(spec: BenchSpec, user_classes: list[Any] | None = None) -> Environment:
    return Environment(
        user_classes=user_classes or [SCENARIO_USERS[spec.scenario]],
        host=spec.url,
        stop_timeout=0.0,  # stopping kills users at once; in-flight answers are not measured
        catch_exceptions=True,
        locustfile=f"qa-ws bench --scenario {spec.scenario}",
        shape_class=StagesShape(spec.stages) if spec.stages else None,
    )


def _options_and_tokens(spec: BenchSpec, config_file: str | None) -> tuple[Any, TokenSource]:
    tokens = TokenSource.from_env(
        os.environ,
        config_file=config_file,
        mint=spec.mint_tokens,
        ttl_s=spec.total_seconds + 3600.0,
    )
    # every user gives up by itself a little after the run, even if nobody stops it
    options = dataclasses.replace(
        spec.load, max_user_seconds=spec.total_seconds + 60.0, targets=tuple(spec.targets)
    )
    return options, tokens


def _install(env: Environment, spec: BenchSpec) -> BenchState:
    options, tokens = _options_and_tokens(spec, spec.config_file)
    return install(env, options, tokens)


def _parsed_options(spec: BenchSpec) -> argparse.Namespace:
    """Locust's default options, plus the spec: the master sends them with every spawn."""
    parser = argument_parser.get_empty_argument_parser(default_config_files=[])
    argument_parser.setup_parser_arguments(parser)  # type: ignore[no-untyped-call]
    parsed: argparse.Namespace = parser.parse(args=[])
    parsed.qa_ws_spec = spec.to_json()
    return parsed


def _live(state: BenchState, master: bool) -> tuple[int, int, int]:
    """(connects that succeeded, errors, connections held) as this process sees them now."""
    if master:
        agg = state.aggregator
        held = sum(max(t.items())[1] for t in agg.ticks.values() if t)
        return len(agg.samples.get("connect", [])), sum(agg.errors.values()), held
    rec = state.recorder
    return len(rec.samples.get("connect", [])), sum(rec.errors.values()), rec.held


def _progress(
    runner: Runner, state: BenchState, elapsed: float, master: bool
) -> dict[str, float | int]:
    connects, errors, held = _live(state, master)
    line = {
        "t": round(elapsed, 1),
        "users": runner.user_count,
        "held": held,
        "connects": connects,
        "errors": errors,
    }
    print(PROGRESS_PREFIX + json.dumps(line), flush=True)
    return line


def _start_workers(spec_path: Path, count: int, port: int) -> list[subprocess.Popen[bytes]]:
    cmd = [
        sys.executable,
        "-m",
        "qa_ws_cli.bench.runner",
        "worker",
        "--spec",
        str(spec_path),
        "--master-port",
        str(port),
    ]
    return [subprocess.Popen(cmd, stdin=subprocess.DEVNULL) for _ in range(count)]  # noqa: S603


def _wait_workers(
    runner: MasterRunner,
    count: int,
    procs: list[subprocess.Popen[bytes]],
    wait_s: float = WORKERS_READY_S,
    hint: str = "",
) -> set[str]:
    deadline = time.monotonic() + wait_s
    while len(runner.clients.ready) < count:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise SetupError(
                f"only {len(runner.clients.ready)} of {count} load workers connected "
                f"within {wait_s:g} s{hint}"
            )
        gevent.sleep(0.1)
    return {client.id for client in runner.clients.ready}


def _create_runner(env: Environment, spec: BenchSpec) -> tuple[Runner, int]:
    if spec.expect_workers:
        env.parsed_options = _parsed_options(spec)
        runner = env.create_master_runner(spec.master_bind_host, spec.master_port)
        return runner, spec.master_port
    if spec.processes > 1:
        port = _free_port()
        return env.create_master_runner("127.0.0.1", port), port
    return env.create_local_runner(), 0


def _gather_workers(
    runner: Runner, spec: BenchSpec, spec_path: Path, port: int
) -> tuple[set[str], list[subprocess.Popen[bytes]]]:
    if spec.expect_workers:
        hint = (
            f" (start them with: qa-ws bench --worker --master-host <this machine> "
            f"--master-port {port})"
        )
        wait = spec.workers_wait_s
        return _wait_workers(runner, spec.expect_workers, [], wait, hint), []  # type: ignore[arg-type]
    if spec.processes > 1:
        workers = _start_workers(spec_path, spec.processes, port)
        return _wait_workers(runner, spec.processes, workers), workers  # type: ignore[arg-type]
    return set(), []


def run_load(spec: BenchSpec, spec_path: Path, result_path: Path) -> int:
    env = _environment(spec)
    runner, port = _create_runner(env, spec)
    master = isinstance(runner, MasterRunner)
    state = _install(env, spec)
    helpers = [gevent.spawn(stats.stats_history, runner)]
    csv_writer = None
    if spec.csv_prefix:
        csv_writer = stats.StatsCSVFileWriter(
            env, stats.PERCENTILES_TO_REPORT, spec.csv_prefix, full_history=True
        )
        helpers.append(gevent.spawn(csv_writer.stats_writer))
    workers: list[subprocess.Popen[bytes]] = []
    interrupted: list[int] = []
    timeline: list[dict[str, float | int]] = []
    gevent.signal_handler(signal.SIGTERM, lambda: interrupted.append(signal.SIGTERM))
    try:
        expected, workers = _gather_workers(runner, spec, spec_path, port)
        started = time.monotonic()
        if spec.stages:
            runner.start_shape()
        else:
            gevent.spawn(runner.start, spec.users, spec.spawn_rate)
        aborted = _drive(runner, state, spec, started, master, interrupted, timeline)
        load_seconds = time.monotonic() - started
        if master:
            # Locust's own stop polls once a second; the workers stop at once and say so
            runner.send_message(STOP_MESSAGE)
            _wait_finals(state, expected)
        with gevent.Timeout(QUIT_WAIT_S, False):  # results are in; a stuck user must not hang us
            runner.quit()
    finally:
        for helper in helpers:
            helper.kill(block=False)
        _stop_workers(workers)
    if csv_writer is not None:
        _write_csv(env, csv_writer)
    if spec.html:
        report = get_html_report(env, show_download_link=False)  # type: ignore[no-untyped-call]
        Path(spec.html).write_text(report, encoding="utf-8")
    raw = state.aggregator.raw()
    raw["cpu_warning"] = bool(
        raw["cpu_warning"] or runner.cpu_warning_emitted or runner.worker_cpu_warning_emitted
    )
    raw.update(
        load_seconds=round(load_seconds, 3),
        aborted=aborted,
        processes=spec.processes,
        workers=len(expected),
        users_after_quit=runner.user_count,  # 0 unless a user outlived Locust's stop
        users_timeline=timeline,
        locust={"requests": env.stats.total.num_requests, "failures": env.stats.total.num_failures},
    )
    result_path.write_text(json.dumps(raw), encoding="utf-8")
    return 0


def _drive(
    runner: Runner,
    state: BenchState,
    spec: BenchSpec,
    started: float,
    master: bool,
    interrupted: list[int],
    timeline: list[dict[str, float | int]],
) -> str | None:
    """Let the load run for the duration; a reason string when it had to stop early."""
    total = spec.total_seconds
    spawn_s = spec.users / spec.spawn_rate if not spec.stages else spec.stages[0][0]
    next_report = started + 1.0
    while (now := time.monotonic()) - started < total:
        if interrupted:
            return "interrupted"
        if now >= next_report:
            timeline.append(_progress(runner, state, now - started, master))
            next_report += 1.0
            connects, errors, _ = _live(state, master)
            if connects == 0 and errors >= spec.peak_users and now - started > spawn_s:
                return "every user's first connection failed"
        gevent.sleep(min(0.2, max(0.0, total - (now - started))))
    return None


def _wait_finals(state: BenchState, expected: set[str]) -> None:
    deadline = time.monotonic() + FINALS_WAIT_S
    while not expected <= state.aggregator.finals and time.monotonic() < deadline:
        gevent.sleep(0.05)


def _stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for proc in workers:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _write_csv(env: Environment, writer: stats.StatsCSVFileWriter) -> None:
    """Locust's periodic writer may be up to a second behind: write the final tables again."""
    writer.close_files()
    final = stats.StatsCSV(env, stats.PERCENTILES_TO_REPORT)
    prefix = writer.base_filepath
    for suffix, write in (
        ("_stats.csv", final.requests_csv),
        ("_failures.csv", final.failures_csv),
        ("_exceptions.csv", final.exceptions_csv),
    ):
        with open(prefix + suffix, "w", newline="", encoding="utf-8") as fh:
            write(csv.writer(fh))


def run_worker(spec: BenchSpec, port: int) -> int:
    env = _environment(spec)
    runner = env.create_worker_runner("127.0.0.1", port)
    _install(env, spec)
    # the master sends "quit"; if it never does, give up well after the run should have ended
    runner.greenlet.join(timeout=spec.total_seconds + WORKERS_READY_S + 120.0)
    runner.quit()
    return 0


def run_remote_worker(
    master_host: str, port: int, *, config_file: str | None, allow_remote: bool, max_hours: float
) -> int:
    """A worker for a master elsewhere: the spec arrives with the master's first spawn."""
    env = Environment(
        user_classes=list(SCENARIO_USERS.values()),  # the master names the scenario's class
        stop_timeout=0.0,
        catch_exceptions=True,
        locustfile="qa-ws bench --worker",
    )
    runner = env.create_worker_runner(master_host, port)
    state = install(env, dataclasses.replace(BenchSpec(url="").load), TokenSource())

    def on_test_start(environment: Environment, **_: Any) -> None:
        text = getattr(environment.parsed_options, "qa_ws_spec", None)
        if not text:
            return
        spec = BenchSpec.from_json(text)
        try:
            for target in spec.targets:
                check_url(target, allow_remote=allow_remote)
            state.options, state.tokens = _options_and_tokens(spec, config_file)
        except ValueError as exc:
            print(f"bench worker: {exc}", file=sys.stderr, flush=True)
            gevent.spawn(runner.quit)

    listen(env.events.test_start, on_test_start)
    print(f"bench worker: connected to {master_host}:{port}", file=sys.stderr, flush=True)
    runner.greenlet.join(timeout=max_hours * 3600.0)
    runner.quit()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qa_ws_cli.bench.runner")
    parser.add_argument("mode", choices=("run", "worker"))
    parser.add_argument("--spec", type=Path)
    parser.add_argument("--result", type=Path)
    parser.add_argument("--master-port", type=int, default=0)
    parser.add_argument("--master-host", default="127.0.0.1")
    parser.add_argument("--remote", action="store_true", help="a worker for a master elsewhere")
    parser.add_argument("--config")
    parser.add_argument("--allow-remote", action="store_true")
    parser.add_argument("--max-hours", type=float, default=25.0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    raise_nofile_limit()
    try:
        if args.remote:
            return run_remote_worker(
                args.master_host,
                args.master_port,
                config_file=args.config,
                allow_remote=args.allow_remote,
                max_hours=args.max_hours,
            )
        if args.spec is None:
            parser.error("run and worker need --spec")
        spec = BenchSpec.from_json(args.spec.read_text(encoding="utf-8"))
        if args.mode == "worker":
            return run_worker(spec, args.master_port)
        if args.result is None:
            parser.error("run needs --result")
        return run_load(spec, args.spec, args.result)
    except (SetupError, ValueError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr, flush=True)
        return EXIT_SETUP


if __name__ == "__main__":
    sys.exit(main())
