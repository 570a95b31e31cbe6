"""What ``qa-ws status`` shows, computed from a server's own endpoints: ``/readyz``,
two readings of ``/metrics`` (rates and the p95 need an interval), and, with an admin token,
``/admin/connections`` for the other instances the store knows of.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from qa_ws_cli.client.admin import AdminClient
from qa_ws_cli.errors import HandshakeRefused, RequestRefused

LATENCY = "qa_ws_chat_latency_seconds"


@dataclass(frozen=True)
class Reading:
    """One scrape of ``/metrics``: every sample by name and labels, and when it was taken."""

    at: float
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    @classmethod
    def parse(cls, text: str, at: float | None = None) -> Reading:
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
        return cls(time.monotonic() if at is None else at, samples)

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def by_label(self, name: str, label: str) -> dict[str, float]:
        return {
            dict(lbls)[label]: v
            for (n, lbls), v in self.samples.items()
            if n == name and label in dict(lbls)
        }

    def info(self, name: str) -> dict[str, str]:
        for (n, lbls), _ in self.samples.items():
            if n == name:
                return dict(lbls)
        return {}


def quantile(q: float, before: Reading, after: Reading, name: str = LATENCY) -> float | None:
    """The q-quantile over the interval, interpolated in the buckets as Prometheus'
    ``histogram_quantile`` does; None when nothing was observed in between."""
    b0, b1 = before.by_label(name + "_bucket", "le"), after.by_label(name + "_bucket", "le")
    buckets = sorted(((float(le), b1[le] - b0.get(le, 0.0)) for le in b1), key=lambda x: x[0])
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width)
        lower_bound, lower_count = bound, count
    return None


@dataclass
class Status:
    url: str
    ready: bool | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    version: str = "?"
    instance: str = "?"
    name: str = "?"
    connections: float = 0.0
    sessions: float = 0.0
    in_flight: float = 0.0
    chats_per_s: float | None = None
    p95_s: float | None = None
    errors: dict[str, float] = field(default_factory=dict)
    instances: list[dict[str, Any]] | None = None  # None: not asked (no admin token)
    problems: list[str] = field(default_factory=list)
    # the admin token was refused (401 invalid, 403 without the admin scope): the CLI exits 3
    token_refused: HandshakeRefused | None = None


class StatusProbe:
    """Reads a server's status; keeps the last reading so ``--watch`` needs one scrape a round."""

    def __init__(
        self, client: AdminClient, *, metrics_token: str | None, interval_s: float = 1.0
    ) -> None:
        self.client = client
        self.metrics_token = metrics_token
        self.interval_s = interval_s
        self.last: Reading | None = None

    async def read(self) -> Status:
        """Every part that answers; an unreadable /metrics still checks the admin token."""
        status = Status(self.client.base)
        await self._readiness(status)
        first = self.last or await self._scrape(status)
        second = None
        if first is not None:
            if self.last is None:
                await asyncio.sleep(self.interval_s)
            second = await self._scrape(status)
        if first is not None and second is not None:
            self.last = second
            summarize(status, first, second)
        await self._instances(status)
        if second is None and status.instances is not None and len(status.instances) == 1:
            only = status.instances[0]  # the one instance there is: this one
            status.version = str(only.get("version", "?"))
            status.instance, status.name = str(only.get("instance")), str(only.get("name"))
        return status

    async def _readiness(self, status: Status) -> None:
        code, text = await self.client.request("GET", "/readyz", accept=(503,))
        try:
            body = json.loads(text)
            status.checks = {str(k): bool(v) for k, v in body.get("checks", {}).items()}
        except (ValueError, AttributeError):
            status.problems.append(f"/readyz answered HTTP {code} without its JSON")
        status.ready = code == 200

    async def _scrape(self, status: Status) -> Reading | None:
        try:
            _, text = await self.client.request("GET", "/metrics", token=self.metrics_token or "")
            return Reading.parse(text)
        except HandshakeRefused as exc:
            hint = "pass the metrics token (metrics.token) with --metrics-token"
            status.problems.append(f"metrics: {exc.message}; {hint}")
        except RequestRefused as exc:
            status.problems.append(f"metrics: {exc.message}")
        except ValueError:
            status.problems.append("metrics: /metrics is not in Prometheus' text format")
        return None

    async def _instances(self, status: Status) -> None:
        if not self.client.token:
            return
        try:
            answer = await self.client.json("GET", "/admin/connections")
            status.instances = [i for i in answer.get("instances", []) if isinstance(i, dict)]
        except HandshakeRefused as exc:
            status.token_refused = exc
        except RequestRefused as exc:
            status.problems.append(f"instances: {exc.message}")


def summarize(status: Status, first: Reading, second: Reading) -> None:
    build = second.info("qa_ws_build_info")
    status.version = build.get("version", "?")
    status.instance = build.get("instance", "?")
    status.name = build.get("name", "?")
    status.connections = second.value("qa_ws_connections")
    status.sessions = second.value("qa_ws_sessions")
    status.in_flight = second.value("qa_ws_chats_in_flight")
    elapsed = second.at - first.at
    if elapsed > 0:
        chats = second.value(LATENCY + "_count") - first.value(LATENCY + "_count")
        status.chats_per_s = max(chats, 0.0) / elapsed
    status.p95_s = quantile(0.95, first, second)
    status.errors = {
        code: n for code, n in second.by_label("qa_ws_errors_sent_total", "code").items() if n
    }
