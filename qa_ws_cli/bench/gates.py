"""From a run's raw measurements to figures, and from figures to PASS or FAIL.

Pure functions over the load process's ``raw`` dict (see ``collect.Aggregator.raw``), so
every rule here is unit-tested with made-up numbers. The gates, all from raw samples:

* p95 latency of the scenario's main operation <= ``max_p95_ms`` (no samples: FAIL);
* errors / operations <= ``max_error_rate`` (no operations at all: FAIL, nothing was shown);
* connections held at one moment >= ``min_connections`` (skipped when None);
* when set: p95 time to the first delta, p99 of the main operation, answers per second;
* reconnect: lost and duplicated answers (default 0 each).

A gate that is None is not applied. ``baseline.compare`` adds regression gates of the same
shape, so every report shows them alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qa_ws_cli.bench.samples import LatencySummary, saturated, summarize
from qa_ws_cli.bench.spec import METRICS, OPERATIONS, PRIMARY_METRIC


@dataclass(frozen=True, slots=True)
class Thresholds:
    max_p95_ms: float = 500.0
    max_error_rate: float = 0.0  # a fraction: 0.01 allows one failed operation in 100
    min_connections: int | None = None
    max_ttft_p95_ms: float | None = None
    max_p99_ms: float | None = None
    min_throughput: float | None = None  # answers per second
    max_lost: int | None = None
    max_duplicated: int | None = None


@dataclass(frozen=True, slots=True)
class GateResult:
    name: str
    metric: str
    comparison: str  # "<=" or ">="
    threshold: float
    measured: float | None
    unit: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "comparison": self.comparison,
            "threshold": self.threshold,
            "measured": None if self.measured is None else round(self.measured, 6),
            "unit": self.unit,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class BenchResult:
    scenario: str
    load_seconds: float
    latency: dict[str, LatencySummary]
    operations: int  # successful and failed, over OPERATIONS
    errors_by_code: dict[str, int]
    error_details: dict[str, str]
    connect_ok: int
    held_peak: int
    held_end: int
    messages_sent: int
    answers: int
    rate_limited: int
    cpu_mean: float | None
    cpu_peak: float | None
    cpu_saturated: bool
    processes: int
    complete: bool  # every load process's final report arrived
    first_connect_error: str | None = None
    counters: dict[str, int] = field(default_factory=dict)
    workers: int = 0  # Locust workers of a distributed run (0: none)
    cpu_seconds: float | None = None  # the load processes' CPU over the test

    @property
    def cpu_ms_per_answer(self) -> float | None:
        if self.cpu_seconds is None or not self.answers:
            return None
        return 1000.0 * self.cpu_seconds / self.answers

    @property
    def reconnect(self) -> dict[str, int]:
        """asked, answered, resumed, lost, duplicated (reconnect scenario)."""
        keys = ("asked", "answered", "resumed", "not_resumed", "lost", "duplicated")
        return {key: self.counters.get(key, 0) for key in keys}

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC[self.scenario]

    @property
    def errors(self) -> int:
        return sum(self.errors_by_code.values())

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.operations if self.operations else None

    @property
    def messages_per_second(self) -> float:
        return self.messages_sent / self.load_seconds if self.load_seconds > 0 else 0.0

    @property
    def answers_per_second(self) -> float:
        return self.answers / self.load_seconds if self.load_seconds > 0 else 0.0

    @property
    def unreachable(self) -> bool:
        """No user ever connected, though some tried: the run measured nothing."""
        return self.connect_ok == 0 and self.errors > 0

    @classmethod
    def from_raw(
        cls, raw: Mapping[str, Any], *, scenario: str, load_seconds: float, processes: int = 1
    ) -> BenchResult:
        samples: Mapping[str, list[float]] = raw.get("samples", {})
        latency = {name: s for name in METRICS if (s := summarize(samples.get(name, [])))}
        errors = {code: int(n) for code, n in raw.get("errors", {}).items() if n}
        ok_operations = sum(len(samples.get(name, [])) for name in OPERATIONS)
        cpu_nodes: Mapping[str, list[float]] = raw.get("cpu", {})
        windows = [w for node in cpu_nodes.values() for w in node]
        counters = {k: int(v) for k, v in raw.get("counters", {}).items()}
        return cls(
            scenario=scenario,
            load_seconds=load_seconds,
            latency=latency,
            operations=ok_operations + sum(errors.values()),
            errors_by_code=dict(sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))),
            error_details=dict(raw.get("details", {})),
            connect_ok=len(samples.get("connect", [])),
            held_peak=int(raw.get("held_peak", 0)),
            held_end=int(raw.get("held_end", 0)),
            messages_sent=counters.get("sent", 0),
            answers=counters.get("answered", 0),
            rate_limited=counters.get("rate_limited", 0),
            cpu_mean=math.fsum(windows) / len(windows) if windows else None,
            cpu_peak=max(windows) if windows else None,
            cpu_saturated=bool(raw.get("cpu_warning"))
            or any(saturated(node) for node in cpu_nodes.values()),
            processes=processes,
            complete=int(raw.get("finals", 0)) >= int(raw.get("nodes", 0)),
            first_connect_error=raw.get("first_connect_error"),
            counters=counters,
            workers=int(raw.get("workers") or 0),
            cpu_seconds=raw.get("cpu_seconds"),
        )


def default_min_connections(scenario: str, users: int) -> int | None:
    """All users, except for churn, whose users leave on purpose between their messages."""
    return None if scenario == "churn" else users


def evaluate(result: BenchResult, thresholds: Thresholds) -> list[GateResult]:
    t = thresholds
    gates = [
        _latency_gate(result, "p95 latency", result.primary_metric, "p95", t.max_p95_ms),
        _error_gate(result, t.max_error_rate),
    ]
    if thresholds.min_connections is not None:
        passed = result.held_peak >= thresholds.min_connections
        gates.append(
            GateResult(
                name="connections",
                metric="connections.peak",
                comparison=">=",
                threshold=thresholds.min_connections,
                measured=result.held_peak,
                unit="connections",
                passed=passed,
                detail=f"{result.held_end} still held when the load stopped",
            )
        )
    if t.max_ttft_p95_ms is not None:
        gates.append(
            _latency_gate(result, "time to first delta", "first_delta", "p95", t.max_ttft_p95_ms)
        )
    if t.max_p99_ms is not None:
        gates.append(
            _latency_gate(result, "p99 latency", result.primary_metric, "p99", t.max_p99_ms)
        )
    if t.min_throughput is not None:
        rate = result.answers_per_second
        gates.append(
            GateResult(
                name="throughput",
                metric="throughput.answers_per_second",
                comparison=">=",
                threshold=t.min_throughput,
                measured=rate,
                unit="/s",
                passed=rate >= t.min_throughput,
                detail=f"{result.answers} answers in {result.load_seconds:.1f} s",
            )
        )
    if result.scenario == "reconnect":
        gates += _reconnect_gates(result, t)
    return gates


def _reconnect_gates(result: BenchResult, t: Thresholds) -> list[GateResult]:
    figures = result.reconnect
    detail = (
        f"asked {figures['asked']}, answered {figures['answered']}, "
        f"resumed {figures['resumed']} of {figures['resumed'] + figures['not_resumed']} reconnects"
    )
    gates = []
    for name, limit in (("lost", t.max_lost), ("duplicated", t.max_duplicated)):
        measured = figures[name]
        gates.append(
            GateResult(
                name=f"{name} answers",
                metric=f"reconnect.{name}",
                comparison="<=",
                threshold=0 if limit is None else limit,
                measured=measured,
                unit="answers",
                passed=measured <= (0 if limit is None else limit) and figures["asked"] > 0,
                detail=detail if figures["asked"] else "nothing was asked",
            )
        )
    return gates


def _latency_gate(
    result: BenchResult, name: str, metric: str, pct: str, limit: float
) -> GateResult:
    summary = result.latency.get(metric)
    if summary is None:
        return GateResult(
            name=name,
            metric=f"{metric}.{pct}",
            comparison="<=",
            threshold=limit,
            measured=None,
            unit="ms",
            passed=False,
            detail=f"no {metric} samples were recorded",
        )
    measured = float(getattr(summary, pct))
    return GateResult(
        name=name,
        metric=f"{metric}.{pct}",
        comparison="<=",
        threshold=limit,
        measured=measured,
        unit="ms",
        passed=measured <= limit,
        detail=f"{summary.count} samples; p50 {summary.p50:.1f}, max {summary.max:.1f} ms",
    )


def _error_gate(result: BenchResult, limit: float) -> GateResult:
    rate = result.error_rate
    if rate is None:
        return GateResult(
            name="error rate",
            metric="errors.rate",
            comparison="<=",
            threshold=limit,
            measured=None,
            unit="ratio",
            passed=False,
            detail="no operations were made",
        )
    top = ", ".join(f"{code} {n}" for code, n in list(result.errors_by_code.items())[:3])
    return GateResult(
        name="error rate",
        metric="errors.rate",
        comparison="<=",
        threshold=limit,
        measured=rate,
        unit="ratio",
        passed=rate <= limit,
        detail=f"{result.errors} of {result.operations} operations" + (f" ({top})" if top else ""),
    )


def all_passed(gates: list[GateResult]) -> bool:
    return all(g.passed for g in gates)
