"""Reports from a made-up result: JSON schema, JUnit (one case per gate), CSV, console."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from qa_ws_cli.bench.baseline import SCHEMA
from qa_ws_cli.bench.gates import BenchResult, Thresholds, evaluate
from qa_ws_cli.bench.reports import (
    build_report,
    format_value,
    render_console,
    write_csv,
    write_json,
    write_junit,
)

RUN = {"scenario": "chat", "url": "ws://127.0.0.1:1/ws", "users": 10, "duration_s": 5.0}


def result(**kw: Any) -> BenchResult:
    raw: dict[str, Any] = {
        "samples": {"chat": [10.0, 20.0, 600.0, 700.0], "connect": [3.0] * 10},
        "errors": {"agent_busy": 1},
        "details": {"agent_busy": "at most 4 in flight"},
        "counters": {"sent": 5, "answered": 4},
        "held_peak": 10,
        "held_end": 9,
        "cpu": {"local": [97.0, 98.0, 99.0]},
        "cpu_warning": False,
        "nodes": 1,
        "finals": 1,
    }
    raw.update(kw)
    return BenchResult.from_raw(raw, scenario="chat", load_seconds=5.0)


def test_json_report_schema(tmp_path: Path) -> None:
    r = result()
    gates = evaluate(r, Thresholds(500.0, 0.0, 10))
    path = tmp_path / "out" / "bench.json"
    write_json(path, build_report(r, gates, RUN))
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA and data["passed"] is False
    assert set(data) == {
        "schema",
        "passed",
        "run",
        "latency_ms",
        "connections",
        "throughput",
        "errors",
        "streaming",
        "reconnect",
        "generator",
        "gates",
    }
    assert data["latency_ms"]["chat"] == {
        "count": 4,
        "min": 10.0,
        "mean": 332.5,
        "p50": 20.0,
        "p95": 700.0,
        "p99": 700.0,
        "max": 700.0,
    }
    assert data["connections"] == {"target": 10, "peak": 10, "at_end": 9, "connects_ok": 10}
    assert data["throughput"]["messages_per_second"] == 1.0
    assert data["errors"] == {
        "total": 1,
        "operations": 15,
        "rate": round(1 / 15, 6),
        "by_code": {"agent_busy": 1},
        "examples": {"agent_busy": "at most 4 in flight"},
    }
    assert data["generator"]["cpu_saturated"] is True
    assert [(g["name"], g["passed"]) for g in data["gates"]] == [
        ("p95 latency", False),
        ("error rate", False),
        ("connections", True),
    ]


def test_junit_has_one_case_per_gate_and_failures_for_failed_ones(tmp_path: Path) -> None:
    r = result()
    gates = evaluate(r, Thresholds(500.0, 0.0, 10))
    path = tmp_path / "bench.xml"
    write_junit(path, r, gates, RUN)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "3" and root.get("failures") == "2"
    suite = root.find("testsuite")
    assert suite is not None and suite.get("failures") == "2"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "p95 latency <= 500.0 ms",
        "error rate <= 0.00 %",
        "connections >= 10",
    ]
    failures = [c.find("failure") for c in cases]
    assert failures[0] is not None and failures[1] is not None and failures[2] is None
    assert "measured 700.0 ms" in (failures[0].get("message") or "")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["users"] == "10"
    out = suite.find("system-out")
    assert out is not None and json.loads(out.text or "{}")["schema"] == SCHEMA


def test_csv_files(tmp_path: Path) -> None:
    r = result()
    gates = evaluate(r, Thresholds(500.0, 0.0, 10))
    paths = write_csv(str(tmp_path / "csv" / "run"), r, gates)
    assert [p.name for p in paths] == ["run_latency.csv", "run_gates.csv", "run_errors.csv"]
    latency = list(csv.DictReader(paths[0].open()))
    assert [row["metric"] for row in latency] == ["chat", "connect"]
    assert latency[0]["p95"] == "700.0" and latency[0]["count"] == "4"
    gate_rows = list(csv.DictReader(paths[1].open()))
    assert [row["result"] for row in gate_rows] == ["FAIL", "FAIL", "PASS"]
    assert list(csv.DictReader(paths[2].open())) == [
        {"code": "agent_busy", "count": "1", "example": "at most 4 in flight"}
    ]


def test_console_table_shows_each_gate_and_the_cpu_warning() -> None:
    r = result()
    out = io.StringIO()
    render_console(r, evaluate(r, Thresholds(500.0, 0.0, 10)), title="t", file=out, target_users=10)
    text = out.getvalue()
    assert "PASS" in text and text.count("FAIL") == 2
    assert "saturated its CPU" in text and "peak 10 of 10" in text
    assert "agent_busy 1" in text


def test_console_without_errors_or_warnings() -> None:
    r = result(errors={}, cpu={}, nodes=2, finals=1)
    out = io.StringIO()
    render_console(r, evaluate(r, Thresholds(1000.0, 0.0, None)), title="t", file=out)
    text = out.getvalue()
    assert "errors:" not in text
    assert "CPU n/a" in text and "final reports were lost" in text


def test_format_value() -> None:
    assert format_value(None, "ms") == "n/a"
    assert format_value(12.345, "ms") == "12.3 ms"
    assert format_value(0.0123, "ratio") == "1.23 %"
    assert format_value(150, "connections") == "150"
