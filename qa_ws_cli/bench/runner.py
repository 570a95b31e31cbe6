"""The load process: ``python -m qa_ws_cli.bench.runner run|worker --spec FILE ...``.

``qa-ws bench`` starts it as a child so that Locust's gevent monkey-patching (done when
``locust`` is imported, first thing below) never touches the CLI or the server. ``run``
drives the test headless with a local runner, or as Locust's master over ``--processes``
workers (``worker`` mode, the same module started once per extra core). When the load has
stopped it writes the raw measurements as JSON (``--result``) and, when asked, Locust's
HTML report and CSV files. Progress goes to stdout, one ``PROGRESS {json}`` line a second.

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

import gevent
from locust import stats
from locust.html import get_html_report
from locust.runners import MasterRunner, Runner

from qa_ws_cli.bench.hooks import STOP_MESSAGE, BenchState, install
from qa_ws_cli.bench.launch import raise_nofile_limit
from qa_ws_cli.bench.spec import PROGRESS_PREFIX, BenchSpec
from qa_ws_cli.bench.tokens import TokenSource
from qa_ws_cli.bench.users import SCENARIO_USERS

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


def _environment(spec: BenchSpec) -> Environment:
    return Environment(
        user_classes=[SCENARIO_USERS[spec.scenario]],
        host=spec.url,
        stop_timeout=0.0,  # stopping kills users at once; in-flight answers are not measured
        catch_exceptions=True,
        locustfile=f"qa-ws bench --scenario {spec.scenario}",
    )


def _install(env: Environment, spec: BenchSpec) -> BenchState:
    tokens = TokenSource.from_env(
        os.environ,
        config_file=spec.config_file,
        mint=spec.mint_tokens,
        ttl_s=spec.duration_s + 3600.0,
    )
    # every user gives up by itself a little after the run, even if nobody stops it
    options = dataclasses.replace(spec.load, max_user_seconds=spec.duration_s + 60.0)
    return install(env, options, tokens)


def _live(state: BenchState, master: bool) -> tuple[int, int, int]:
    """(connects that succeeded, errors, connections held) as this process sees them now."""
    if master:
        agg = state.aggregator
        held = sum(max(t.items())[1] for t in agg.ticks.values() if t)
        return len(agg.samples.get("connect", [])), sum(agg.errors.values()), held
    rec = state.recorder
    return len(rec.samples.get("connect", [])), sum(rec.errors.values()), rec.held


def _progress(runner: Runner, state: BenchState, elapsed: float, master: bool) -> None:
    connects, errors, held = _live(state, master)
    line = {
        "t": round(elapsed, 1),
        "users": runner.user_count,
        "held": held,
        "connects": connects,
        "errors": errors,
    }
    print(PROGRESS_PREFIX + json.dumps(line), flush=True)


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
    runner: MasterRunner, count: int, procs: list[subprocess.Popen[bytes]]
) -> set[str]:
    deadline = time.monotonic() + WORKERS_READY_S
    while len(runner.clients.ready) < count:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise SetupError(f"only {len(runner.clients.ready)} of {count} load workers started")
        gevent.sleep(0.1)
    return {client.id for client in runner.clients.ready}


def run_load(spec: BenchSpec, spec_path: Path, result_path: Path) -> int:
    env = _environment(spec)
    master = spec.processes > 1
    port = _free_port() if master else 0
    runner: Runner = (
        env.create_master_runner("127.0.0.1", port) if master else env.create_local_runner()
    )
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
    gevent.signal_handler(signal.SIGTERM, lambda: interrupted.append(signal.SIGTERM))
    try:
        expected: set[str] = set()
        if master:
            workers = _start_workers(spec_path, spec.processes, port)
            expected = _wait_workers(runner, spec.processes, workers)  # type: ignore[arg-type]
        started = time.monotonic()
        gevent.spawn(runner.start, spec.users, spec.spawn_rate)
        aborted = _drive(runner, state, spec, started, master, interrupted)
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
) -> str | None:
    """Let the load run for the duration; a reason string when it had to stop early."""
    spawn_s = spec.users / spec.spawn_rate
    next_report = started + 1.0
    while (now := time.monotonic()) - started < spec.duration_s:
        if interrupted:
            return "interrupted"
        if now >= next_report:
            _progress(runner, state, now - started, master)
            next_report += 1.0
            connects, errors, _ = _live(state, master)
            if connects == 0 and errors >= spec.users and now - started > spawn_s:
                return "every user's first connection failed"
        gevent.sleep(min(0.2, max(0.0, spec.duration_s - (now - started))))
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
    runner.greenlet.join(timeout=spec.duration_s + WORKERS_READY_S + 120.0)
    runner.quit()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qa_ws_cli.bench.runner")
    parser.add_argument("mode", choices=("run", "worker"))
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--result", type=Path)
    parser.add_argument("--master-port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    raise_nofile_limit()
    try:
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
