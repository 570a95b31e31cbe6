"""``--baseline previous.json --max-regression 10%``: not slower than the last good run.

k6 and Locust gate on absolute numbers only; CI wants "no worse than last week". A baseline
is a JSON report this command wrote (schema ``qa-ws-bench/2``, same scenario). Each figure
below becomes a gate of the usual shape, so the console, JSON, JUnit and HTML reports show
it with the others: lower is better for latencies and the error rate (measured <= baseline
x (1 + tolerance)), higher for throughput (measured >= baseline x (1 - tolerance)). A
figure the baseline lacks (no streaming agent then, say) is not compared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qa_ws_cli.bench.gates import BenchResult, GateResult
from qa_ws_cli.bench.spec import PRIMARY_METRIC

SCHEMA = "qa-ws-bench/2"


class BaselineError(Exception):
    """The baseline cannot be compared with this run; the message says why."""


def parse_tolerance(text: str) -> float:
    """``10%`` or ``10`` -> 0.10; ValueError for anything else or outside 0-1000 %."""
    raw = text.strip().removesuffix("%").strip()
    try:
        percent = float(raw)
    except ValueError:
        raise ValueError(f"--max-regression is a percentage like 10% (got {text!r})") from None
    if not 0 <= percent <= 1000:
        raise ValueError(f"--max-regression must be between 0% and 1000% (got {text!r})")
    return percent / 100.0


def load_baseline(path: Path, scenario: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BaselineError(f"cannot read the baseline {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise BaselineError(f"the baseline {path} is not JSON") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else None
        raise BaselineError(
            f"the baseline {path} has schema {found!r}, not {SCHEMA!r}: "
            "use a report written by this version's --report-json"
        )
    theirs = (data.get("run") or {}).get("scenario")
    if theirs != scenario:
        raise BaselineError(
            f"the baseline {path} is a {theirs!r} run; this run is {scenario!r}: "
            "compare runs of the same scenario"
        )
    return data


def _figures(result: BenchResult) -> dict[str, float | None]:
    primary = result.latency.get(result.primary_metric)
    ttft = result.latency.get("first_delta")
    return {
        "p95": primary.p95 if primary else None,
        "p99": primary.p99 if primary else None,
        "ttft_p95": ttft.p95 if ttft else None,
        "throughput": result.answers_per_second if result.answers else None,
        "error_rate": result.error_rate,
    }


def baseline_figures(report: Mapping[str, Any]) -> dict[str, float | None]:
    scenario = str(report["run"]["scenario"])
    latency = report.get("latency_ms", {})
    primary = latency.get(PRIMARY_METRIC.get(scenario, "chat")) or {}
    ttft = latency.get("first_delta") or {}
    throughput = report.get("throughput", {})
    return {
        "p95": primary.get("p95"),
        "p99": primary.get("p99"),
        "ttft_p95": ttft.get("p95"),
        "throughput": throughput.get("answers_per_second") if throughput.get("answers") else None,
        "error_rate": report.get("errors", {}).get("rate"),
    }


# figure -> (gate name, metric, unit, higher is better)
_FIGURES: dict[str, tuple[str, str, str, bool]] = {
    "p95": ("p95 vs baseline", "{m}.p95", "ms", False),
    "p99": ("p99 vs baseline", "{m}.p99", "ms", False),
    "ttft_p95": ("time to first delta vs baseline", "first_delta.p95", "ms", False),
    "throughput": ("throughput vs baseline", "throughput.answers_per_second", "/s", True),
    "error_rate": ("error rate vs baseline", "errors.rate", "ratio", False),
}


def compare(
    result: BenchResult, baseline: Mapping[str, Any], tolerance: float, source: str
) -> list[GateResult]:
    """One regression gate per figure both runs have."""
    now, then = _figures(result), baseline_figures(baseline)
    gates = []
    for key, (name, metric, unit, higher) in _FIGURES.items():
        ours, theirs = now[key], then[key]
        if ours is None or theirs is None:
            continue
        limit = theirs * (1 - tolerance) if higher else theirs * (1 + tolerance)
        passed = ours >= limit if higher else ours <= limit
        if theirs:
            moved = f"{(ours - theirs) / theirs * 100:+.1f} %"
        else:
            moved = "no change" if ours == theirs else "from 0"
        gates.append(
            GateResult(
                name=name,
                metric=metric.format(m=result.primary_metric),
                comparison=">=" if higher else "<=",
                threshold=limit,
                measured=ours,
                unit=unit,
                passed=passed,
                detail=f"baseline {theirs:g} ({source}), {moved}, tolerance {tolerance * 100:g} %",
            )
        )
    return gates


def regressions(gates: list[GateResult]) -> list[str]:
    """The failed baseline figures, for the one-line verdict."""
    suffix = " vs baseline"
    return [g.name.removesuffix(suffix) for g in gates if g.name.endswith(suffix) and not g.passed]
