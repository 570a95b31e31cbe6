"""Stages, baselines and the HTML report from made-up figures (no load, no server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qa_ws_cli.bench.baseline import compare, parse_tolerance, regressions
from qa_ws_cli.bench.gates import BenchResult, Thresholds, evaluate
from qa_ws_cli.bench.htmlreport import render_html
from qa_ws_cli.bench.reports import build_report
from qa_ws_cli.bench.spec import format_stages, parse_stages


def result(chat: list[float], answers: int = 100, errors: int = 0) -> BenchResult:
    raw: dict[str, Any] = {
        "samples": {"chat": chat, "first_delta": [c / 4 for c in chat], "connect": [1.0]},
        "errors": {"agent_busy": errors} if errors else {},
        "counters": {"sent": answers, "answered": answers},
        "nodes": 1,
        "finals": 1,
    }
    return BenchResult.from_raw(raw, scenario="chat", load_seconds=10.0)


def report_of(r: BenchResult) -> dict[str, Any]:
    return build_report(r, evaluate(r, Thresholds()), {"scenario": "chat"})


def test_stages_parse_and_print_back() -> None:
    assert parse_stages("30s:50, 1m:150,30s:0") == ((30.0, 50), (60.0, 150), (30.0, 0))
    assert format_stages([[30.0, 50], [60.0, 150]]) == "30s:50,60s:150"


def test_tolerance() -> None:
    assert parse_tolerance("10%") == pytest.approx(0.1)
    assert parse_tolerance("25") == pytest.approx(0.25)
    for bad in ("ten", "-5%", "2000%"):
        with pytest.raises(ValueError, match="--max-regression"):
            parse_tolerance(bad)


def test_a_slower_run_regresses_in_latency_and_throughput() -> None:
    base = report_of(result([100.0] * 100))
    slow = result([150.0] * 100, answers=50)
    gates = compare(slow, base, 0.10, "base.json")
    failed = regressions(gates)
    assert failed == ["p95", "p99", "time to first delta", "throughput"]
    p95 = next(g for g in gates if g.name == "p95 vs baseline")
    assert p95.threshold == pytest.approx(110.0) and p95.measured == 150.0
    assert "+50.0 %" in p95.detail


def test_within_tolerance_passes_and_errors_from_zero_regress() -> None:
    base = report_of(result([100.0] * 100))
    assert regressions(compare(result([105.0] * 100), base, 0.10, "b")) == []
    assert regressions(compare(result([100.0] * 100, errors=1), base, 0.10, "b")) == ["error rate"]


def test_html_report_opens_with_the_verdict_and_escapes_what_it_shows() -> None:
    r = result([100.0, 900.0])
    report = build_report(r, evaluate(r, Thresholds(max_p95_ms=500)), {"scenario": "<x>"})
    raw = {
        "timed": {"chat": [[1000.0, 100.0], [1001.0, 900.0]], "first_delta": [[1000.0, 20.0]]},
        "users_timeline": [{"t": 1.0, "users": 2, "held": 2}],
    }
    page = render_html(report, raw, "<html>locust's</html>")
    assert page.index("FAIL: qa-ws bench &lt;x&gt;") < page.index("<h2>Gates")
    assert page.count("<svg") == 3 and "answer p95" in page and "connections held" in page
    assert 'srcdoc="&lt;html&gt;locust&#x27;s&lt;/html&gt;"' in page
    assert "<x>" not in page


def test_html_report_without_samples(tmp_path: Path) -> None:
    r = result([])
    page = render_html(report_of(r), {}, None)
    assert page.count("(no samples)") == 2 and "<iframe" not in page  # connect has one
