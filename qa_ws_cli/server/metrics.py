"""Prometheus metrics, one registry per app (no module-level state), children pre-bound.

The values are plain numbers the event loop adds to, and one collector (prometheus-client's
public ``Collector`` interface) turns them into metric families at each scrape. A
prometheus-client ``Counter.inc`` takes about 4,200 instructions (its checks and its lock),
a ``Histogram.observe`` 8,100 and a ``labels()`` lookup 8,400; here an increment is one
addition. Every value changes on the event loop's thread only, so no lock is needed; what a
scrape shows is the same names, types, labels and ``_created`` series as before.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from qa_ws_cli.protocol.codes import ErrorCode

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Count:
    """A counter's (or a gauge's) value."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class Labelled:
    """A family with one label; a child is made on its value's first use."""

    __slots__ = ("children",)

    def __init__(self) -> None:
        self.children: dict[str, Count] = {}

    def labels(self, value: str) -> Count:
        child = self.children.get(value)
        if child is None:
            child = self.children[value] = Count()
        return child


class Buckets:
    """A histogram: a count per bucket (not cumulative; the scrape adds them up), and the sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: past every bound (+Inf)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # a bound is inclusive (le)
        self.sum += value


class Build:
    __slots__ = ("labels",)

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}

    def info(self, labels: dict[str, str]) -> None:
        self.labels = dict(labels)


class Metrics:
    def __init__(self) -> None:
        self.connections = Count()
        self.sessions = Count()
        self.inflight = Count()
        self.connects = Labelled()
        self.refused = Labelled()
        self.closes = Labelled()
        self.frames = Labelled()
        self.frames_chat = self.frames.labels("chat_message")
        self.frames_ping = self.frames.labels("ping")
        self.frames_cancel = self.frames.labels("cancel")
        self.frames_bad = self.frames.labels("invalid")
        self.frames_over_budget = Count()
        errors = Labelled()
        self.errors = {code.value: errors.labels(code.value) for code in ErrorCode}
        self._errors = errors
        self.chat_latency = Buckets(_LATENCY_BUCKETS)
        self.slow_consumers = Count()
        self.broadcasts = Count()
        self.first_delta = Buckets(_LATENCY_BUCKETS)
        self.notes = Labelled()
        self.notes_delivered = self.notes.labels("delivered")
        self.notes_stored = self.notes.labels("stored")
        self.dropped = Labelled()
        self.notes_overflowed = self.dropped.labels("overflow")
        self.notes_expired = self.dropped.labels("expired")
        self.build = Build()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        """What a scrape reads, in the order the families were always listed."""
        yield _gauge("qa_ws_connections", "Open WebSocket connections", self.connections)
        yield _gauge("qa_ws_sessions", "Sessions held in memory", self.sessions)
        yield _gauge("qa_ws_chats_in_flight", "Answers being generated", self.inflight)
        yield _counters("qa_ws_connects", "Accepted connections", "resumed", self.connects)
        refused = "Refused handshakes by error"
        yield _counters("qa_ws_handshakes_refused", refused, "error", self.refused)
        yield _counters("qa_ws_closes", "Closed connections by close code", "code", self.closes)
        yield _counters("qa_ws_frames_received", "Client frames by type", "type", self.frames)
        over = "Frames refused past limits.max_frames_per_second"
        yield _counter("qa_ws_frames_over_budget", over, self.frames_over_budget)
        yield _counters("qa_ws_errors_sent", "Error events sent by code", "code", self._errors)
        latency = "Time from chat_message to agent_response"
        yield _histogram("qa_ws_chat_latency_seconds", latency, self.chat_latency)
        slow = "Connections closed for an overflowing queue"
        yield _counter("qa_ws_slow_consumer_closes", slow, self.slow_consumers)
        yield _counter("qa_ws_broadcasts", "Admin broadcasts sent", self.broadcasts)
        first = "Time from chat_message to the first agent_delta of its answer"
        yield _histogram("qa_ws_first_delta_seconds", first, self.first_delta)
        notes = (
            "Notifications: delivered to a live connection (counted by the instance that sent "
            "it), or stored in an offline user's inbox"
        )
        yield _counters("qa_ws_notifications", notes, "outcome", self.notes)
        dropped = "Kept notifications dropped: the inbox overflowed, or they expired unread"
        yield _counters("qa_ws_notifications_dropped", dropped, "reason", self.dropped)
        build = InfoMetricFamily("qa_ws_build", "Version and instance of this server")
        build.add_metric([], self.build.labels)
        yield build

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _gauge(name: str, documentation: str, count: Count) -> Metric:
    return GaugeMetricFamily(name, documentation, value=count.value)


def _counter(name: str, documentation: str, count: Count) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=())
    family.add_metric((), count.value, created=count.created)
    return family


def _counters(name: str, documentation: str, label: str, labelled: Labelled) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=(label,))
    for value, count in list(labelled.children.items()):
        family.add_metric((value,), count.value, created=count.created)
    return family


def _histogram(name: str, documentation: str, buckets: Buckets) -> Metric:
    family = HistogramMetricFamily(name, documentation)
    cumulative, rows = 0, []
    for bound, count in zip((*map(repr, buckets.bounds), "+Inf"), buckets.counts, strict=True):
        cumulative += count
        rows.append((bound, cumulative))
    family.add_metric((), rows, buckets.sum)
    family.add_sample(f"{name}_created", {}, buckets.created)
    return family
