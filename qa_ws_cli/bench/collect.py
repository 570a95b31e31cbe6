"""Raw measurements in the load processes, and their sum on the master.

Every load process (Locust's local runner, or each worker) has one ``Recorder``: the users
append every latency sample, error and connection change to it, and it hands them on to
Locust's own statistics too. Its ``drain`` empties it into a chunk (plain lists and dicts,
so Locust's msgpack transport carries it unchanged) that the one ``Aggregator`` adds up.
Connections held are sampled at shared wall-clock ticks, so adding the workers' samples of
the same tick gives a count that really was held at one moment.

Nothing here imports Locust or gevent: it is unit-tested in the ordinary test process.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from qa_ws_cli.bench.spec import METRICS, TIMED_METRICS

TICKS_PER_SECOND = 4
Chunk = dict[str, Any]
FireRequest = Callable[..., None]


class BenchFailure(Exception):
    """Handed to Locust's request event for a failed operation; its text is the error code."""


class Recorder:
    """One process's measurements since the last ``drain``; users call it from greenlets.

    gevent switches only at I/O, so plain lists and counters are safe without locks.
    """

    def __init__(self, fire: FireRequest | None = None) -> None:
        self._fire = fire
        self.held = 0
        self.peak = 0
        self.cpu_warning = False
        self.first_connect_error: str | None = None
        self.held_end: int | None = None
        self.cpu_seconds: float | None = None  # this process's CPU over the test (final chunk)
        self._reset_chunk()

    def _reset_chunk(self) -> None:
        self.samples: dict[str, list[float]] = {name: [] for name in METRICS}
        self.errors: Counter[str] = Counter()
        self.details: dict[str, str] = {}
        self.counters: Counter[str] = Counter()
        self.ticks: list[tuple[int, int]] = []
        self.cpu: list[float] = []
        # [wall-clock second, ms] of the charted metrics
        self.timed: dict[str, list[list[float]]] = {name: [] for name in TIMED_METRICS}

    def restart(self) -> None:
        """A new test in the same process (the web UI's second run): forget the last one."""
        self._reset_chunk()
        self.peak = self.held
        self.cpu_warning = False
        self.first_connect_error = None
        self.held_end = None
        self.cpu_seconds = None

    # -- from the users --------------------------------------------------------------------

    def ok(self, name: str, ms: float, length: int = 0) -> None:
        self.samples.setdefault(name, []).append(ms)
        if name in self.timed:
            self.timed[name].append([int(time.time()), round(ms, 3)])
        if self._fire is not None:
            self._fire(
                request_type="WS",
                name=name,
                response_time=ms,
                response_length=length,
                exception=None,
                context={},
            )

    def fail(self, name: str, code: str, ms: float = 0.0, detail: str = "") -> None:
        self.errors[code] += 1
        if code not in self.details:
            self.details[code] = detail or code
        if name == "connect" and self.first_connect_error is None:
            self.first_connect_error = f"{code}: {detail}" if detail else code
        if self._fire is not None:
            self._fire(
                request_type="WS",
                name=name,
                response_time=ms,
                response_length=0,
                exception=BenchFailure(code),
                context={},
            )

    def sample(self, name: str, value: float) -> None:
        """A per-answer figure that is not an operation (deltas per answer): no Locust event."""
        self.samples.setdefault(name, []).append(value)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] += n

    def connected(self) -> None:
        self.held += 1
        self.peak = max(self.peak, self.held)

    def disconnected(self) -> None:
        self.held -= 1

    # -- from the process's sampler --------------------------------------------------------

    def tick(self, key: int) -> None:
        self.ticks.append((key, self.held))

    def cpu_window(self, percent: float) -> None:
        self.cpu.append(round(percent, 1))

    def mark_end(self) -> None:
        """Connections held when the test stops, before the users are stopped."""
        self.held_end = self.held

    def drain(self, *, final: bool = False) -> Chunk:
        chunk: Chunk = {
            "samples": {name: values for name, values in self.samples.items() if values},
            "errors": dict(self.errors),
            "details": dict(self.details),
            "counters": dict(self.counters),
            "ticks": [list(t) for t in self.ticks],
            "cpu": list(self.cpu),
            "timed": {name: rows for name, rows in self.timed.items() if rows},
            "cpu_seconds": self.cpu_seconds if final else None,
            "peak": self.peak,
            "cpu_warning": self.cpu_warning,
            "first_connect_error": self.first_connect_error,
            "final": final,
            "held_end": self.held_end if final else None,
        }
        self._reset_chunk()
        return chunk


class Aggregator:
    """The sum of every process's chunks; ``raw()`` is what the load process hands back."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.samples: dict[str, list[float]] = {name: [] for name in METRICS}
        self.errors: Counter[str] = Counter()
        self.details: dict[str, str] = {}
        self.counters: Counter[str] = Counter()
        self.ticks: dict[str, dict[int, int]] = {}
        self.peaks: dict[str, int] = {}
        self.held_end: dict[str, int] = {}
        self.cpu: dict[str, list[float]] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.timed: dict[str, list[list[float]]] = {name: [] for name in TIMED_METRICS}
        self.cpu_warning = False
        self.first_connect_error: str | None = None
        self.finals: set[str] = set()

    @property
    def nodes(self) -> set[str]:
        return set(self.peaks)

    def add(self, node: str, chunk: Mapping[str, Any]) -> None:
        for name, values in chunk.get("samples", {}).items():
            self.samples.setdefault(name, []).extend(float(v) for v in values)
        self.errors.update(chunk.get("errors", {}))
        for code, detail in chunk.get("details", {}).items():
            self.details.setdefault(code, detail)
        self.counters.update(chunk.get("counters", {}))
        ticks = self.ticks.setdefault(node, {})
        for key, held in chunk.get("ticks", []):
            ticks[int(key)] = int(held)
        self.peaks[node] = max(self.peaks.get(node, 0), int(chunk.get("peak", 0)))
        self.cpu.setdefault(node, []).extend(chunk.get("cpu", []))
        for name, rows in chunk.get("timed", {}).items():
            self.timed.setdefault(name, []).extend([float(t), float(ms)] for t, ms in rows)
        if chunk.get("cpu_seconds") is not None:
            self.cpu_seconds[node] = float(chunk["cpu_seconds"])
        self.cpu_warning = self.cpu_warning or bool(chunk.get("cpu_warning"))
        if self.first_connect_error is None:
            self.first_connect_error = chunk.get("first_connect_error")
        if chunk.get("final"):
            self.finals.add(node)
            if chunk.get("held_end") is not None:
                self.held_end[node] = int(chunk["held_end"])

    def held_peak(self) -> int:
        """A count that was really held at one moment: per-tick sums, one process's peak, or
        the processes' counts at the stop (each taken as the stop reached it, before any user
        was stopped): a worker's ticks can reach the master too late to line up with another's
        on a loaded machine, its final chunk always arrives."""
        per_tick: Counter[int] = Counter()
        for ticks in self.ticks.values():
            per_tick.update(ticks)
        best_tick = max(per_tick.values(), default=0)
        at_stop = sum(self.held_end.values())
        return max(best_tick, max(self.peaks.values(), default=0), at_stop)

    def raw(self) -> dict[str, Any]:
        return {
            "samples": {name: values for name, values in self.samples.items()},
            "errors": dict(self.errors),
            "details": dict(self.details),
            "counters": dict(self.counters),
            "held_peak": self.held_peak(),
            "held_end": sum(self.held_end.values()),
            "cpu": {node: windows for node, windows in sorted(self.cpu.items())},
            "cpu_seconds": round(sum(self.cpu_seconds.values()), 3) if self.cpu_seconds else None,
            "timed": {name: sorted(rows) for name, rows in self.timed.items()},
            "cpu_warning": self.cpu_warning,
            "first_connect_error": self.first_connect_error,
            "nodes": len(self.nodes),
            "finals": len(self.finals),
        }
