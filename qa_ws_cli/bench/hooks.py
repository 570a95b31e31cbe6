"""Wire the recorder into a Locust environment: local, master or worker, library or CLI.

``install`` is the one place that knows Locust's event names. On a process with users
(local runner or worker) it starts a sampler of held connections and CPU; on a worker it
sends the recorder's chunk with every stats report (``report_to_master``) and a final one
when its users have stopped (custom message ``qa_ws_final``); on the master or a local
runner the chunks meet in the ``Aggregator``. ``qa-ws bench`` and
``loadtests/locustfile.py`` both call it, so plain ``locust --processes 4`` or
master/worker over several machines compute the same raw-sample figures.

Imports Locust (and so gevent's monkey-patching): load processes only.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from qa_ws_cli.bench.collect import TICKS_PER_SECOND, Aggregator, Recorder
from qa_ws_cli.bench.gates import BenchResult, Thresholds, all_passed, evaluate
from qa_ws_cli.bench.spec import LoadOptions
from qa_ws_cli.bench.tokens import TokenSource

FINAL_MESSAGE = "qa_ws_final"
STOP_MESSAGE = "qa_ws_stop"
REPORT_KEY = "qa_ws"
_STATE_ATTR = "qa_ws_bench"
MAX_SAMPLER_TICKS = 7 * 24 * 3600 * TICKS_PER_SECOND  # a week: the loop is bounded, not endless


@dataclass
class BenchState:
    options: LoadOptions
    tokens: TokenSource
    recorder: Recorder
    aggregator: Aggregator = field(default_factory=Aggregator)
    started: float | None = None  # wall clock of test_start
    stopped: float | None = None
    cpu_at_start: float = 0.0
    sampler: gevent.Greenlet | None = None
    _subs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # this process's part of every sub: unique across processes and machines
    _tag: str = field(default_factory=lambda: secrets.token_hex(4))

    def next_sub(self) -> str:
        """A ``sub`` no other virtual user has, in this process or another one."""
        return f"bench-{self.options.run_id}-{self._tag}-{next(self._subs)}"

    @property
    def load_seconds(self) -> float:
        if self.started is None:
            return 0.0
        return max(0.0, (self.stopped or time.time()) - self.started)


def state_of(environment: Environment) -> BenchState:
    state = getattr(environment, _STATE_ATTR, None)
    if not isinstance(state, BenchState):
        raise RuntimeError("qa_ws_cli.bench.hooks.install(environment, ...) was not called")
    return state


def install(environment: Environment, options: LoadOptions, tokens: TokenSource) -> BenchState:
    """Attach a recorder to ``environment`` (whose runner must exist) and its listeners."""
    runner = environment.runner
    if runner is None:
        raise RuntimeError("create the runner before installing the bench hooks")
    events = environment.events
    state = BenchState(options, tokens, Recorder(fire=events.request.fire))
    setattr(environment, _STATE_ATTR, state)
    is_master = isinstance(runner, MasterRunner)
    is_worker = isinstance(runner, WorkerRunner)

    def on_test_start(**_: Any) -> None:
        state.started, state.stopped = time.time(), None
        state.aggregator.reset()
        state.recorder.restart()
        state.cpu_at_start = time.process_time()
        if not is_master and (state.sampler is None or state.sampler.dead):
            state.sampler = gevent.spawn(_sample, state.recorder)

    def on_test_stopping(**_: Any) -> None:
        state.recorder.mark_end()

    def on_test_stop(**_: Any) -> None:
        state.stopped = time.time()
        if is_master:
            return
        if state.sampler is not None:
            state.sampler.kill(block=False)
        state.recorder.cpu_seconds = round(time.process_time() - state.cpu_at_start, 3)
        final = state.recorder.drain(final=True)
        if is_worker:
            runner.send_message(FINAL_MESSAGE, final)
        else:
            state.aggregator.add("local", final)

    def on_cpu_warning(**_: Any) -> None:
        state.recorder.cpu_warning = True

    def on_user_error(exception: BaseException, **_: Any) -> None:
        state.recorder.fail("user", "client_exception", detail=repr(exception)[:200])

    listen(events.test_start, on_test_start)
    listen(events.test_stopping, on_test_stopping)
    listen(events.test_stop, on_test_stop)
    listen(events.cpu_warning, on_cpu_warning)
    listen(events.user_error, on_user_error)
    if is_worker:

        def on_stop_message(environment: Environment, msg: Any, **_: Any) -> None:
            runner.stop()  # its test_stop listener sends the final chunk

        runner.register_message(STOP_MESSAGE, on_stop_message)

        def on_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
            data[REPORT_KEY] = state.recorder.drain()

        listen(events.report_to_master, on_report)
    if is_master:

        def on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
            chunk = data.get(REPORT_KEY)
            if chunk:
                state.aggregator.add(client_id, chunk)

        def on_final(environment: Environment, msg: Any, **_: Any) -> None:
            state.aggregator.add(msg.node_id, msg.data)

        listen(events.worker_report, on_worker_report)
        runner.register_message(FINAL_MESSAGE, on_final)
    return state


def listen(hook: Any, listener: Callable[..., None]) -> None:
    """``hook.add_listener`` with types (Locust's ``EventHook`` has none)."""
    hook.add_listener(listener)


def _sample(recorder: Recorder) -> None:
    """Held connections at shared wall-clock ticks, and this process's CPU per second."""
    last_cpu, last_wall = time.process_time(), time.monotonic()
    for n in range(MAX_SAMPLER_TICKS):
        now = time.time()
        key = math.floor(now * TICKS_PER_SECOND) + 1
        gevent.sleep(max(0.0, key / TICKS_PER_SECOND - now))
        recorder.tick(key)
        if n % TICKS_PER_SECOND == TICKS_PER_SECOND - 1:
            cpu, wall = time.process_time(), time.monotonic()
            if wall > last_wall:
                recorder.cpu_window(100.0 * (cpu - last_cpu) / (wall - last_wall))
            last_cpu, last_wall = cpu, wall


def thresholds_from_env(environ: dict[str, str], users: int, scenario: str) -> Thresholds:
    from qa_ws_cli.bench.gates import default_min_connections

    def get(name: str) -> str | None:
        return environ.get(name, "").strip() or None

    p95, rate = get("QA_WS_MAX_P95_MS"), get("QA_WS_MAX_ERROR_RATE")
    conns = get("QA_WS_MIN_CONNECTIONS")
    return Thresholds(
        max_p95_ms=float(p95) if p95 else 500.0,
        max_error_rate=float(rate) if rate else 0.0,
        min_connections=int(conns) if conns else default_min_connections(scenario, users),
    )


def report_on_quit(environment: Environment, scenario: str) -> None:
    """For plain ``locust -f``: print the raw-sample figures and gates; exit 1 if one fails."""
    from qa_ws_cli.bench.reports import render_console

    state = state_of(environment)
    runner = environment.runner
    users = runner.target_user_count if runner is not None else 0
    result = BenchResult.from_raw(
        state.aggregator.raw(),
        scenario=scenario,
        load_seconds=state.load_seconds,
        processes=max(1, len(state.aggregator.nodes)),
    )
    gates = evaluate(result, thresholds_from_env(dict(os.environ), users, scenario))
    render_console(result, gates, title=f"qa-ws {scenario} (locust)", file=sys.stderr)
    environment.process_exit_code = 0 if all_passed(gates) else 1
