"""What a run leaves behind: a rich table, and JSON, CSV and JUnit files for machines.

The JSON schema (``"schema": "qa-ws-bench/2"``) is the contract for dashboards, scripts and
``--baseline``; the JUnit file has one test case per gate so CI systems show each gate as a
test. Locust's own HTML report and CSV tables are written by the load process (it holds
Locust's stats); the files here are computed from raw samples, as the gates are. The HTML
report (``htmlreport``) puts a verdict and charts in front of Locust's.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from qa_ws_cli.bench.baseline import SCHEMA
from qa_ws_cli.bench.gates import BenchResult, GateResult, all_passed
from qa_ws_cli.bench.samples import LatencySummary
from qa_ws_cli.bench.spec import COUNT_METRICS

_LATENCY_COLUMNS = ("count", "min", "mean", "p50", "p95", "p99", "max")


def _summary(s: LatencySummary | None) -> dict[str, float | int] | None:
    return None if s is None else s.as_dict()


def build_report(
    result: BenchResult, gates: list[GateResult], run: Mapping[str, Any]
) -> dict[str, Any]:
    rate = result.error_rate
    return {
        "schema": SCHEMA,
        "passed": all_passed(gates),
        "run": dict(run),
        "latency_ms": {
            name: s.as_dict() for name, s in result.latency.items() if name not in COUNT_METRICS
        },
        "streaming": {
            "first_delta_ms": _summary(result.latency.get("first_delta")),
            "answer_ms": _summary(result.latency.get("chat")),
            "deltas_per_answer": _summary(result.latency.get("deltas")),
        },
        "connections": {
            "target": run.get("users"),
            "peak": result.held_peak,
            "at_end": result.held_end,
            "connects_ok": result.connect_ok,
        },
        "throughput": {
            "load_seconds": round(result.load_seconds, 3),
            "messages_sent": result.messages_sent,
            "answers": result.answers,
            "rate_limited": result.rate_limited,
            "agent_events": result.counters.get("agent_events", 0),
            "messages_per_second": round(result.messages_per_second, 2),
            "answers_per_second": round(result.answers_per_second, 2),
        },
        "errors": {
            "total": result.errors,
            "operations": result.operations,
            "rate": None if rate is None else round(rate, 6),
            "by_code": result.errors_by_code,
            "examples": {
                code: result.error_details.get(code, "") for code in result.errors_by_code
            },
        },
        "reconnect": result.reconnect if result.scenario == "reconnect" else None,
        "generator": {
            "processes": result.processes,
            "workers": result.workers,
            "cpu_seconds": result.cpu_seconds,
            "cpu_ms_per_answer": _round(result.cpu_ms_per_answer, 3),
            "cpu_percent_mean": _round(result.cpu_mean),
            "cpu_percent_peak": _round(result.cpu_peak),
            "cpu_saturated": result.cpu_saturated,
            "all_reports_received": result.complete,
        },
        "gates": [g.as_dict() for g in gates],
    }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def write_json(path: Path, report: Mapping[str, Any]) -> None:
    _parent(path)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def write_csv(prefix: str, result: BenchResult, gates: list[GateResult]) -> list[Path]:
    """``PREFIX_latency.csv``, ``PREFIX_gates.csv`` and ``PREFIX_errors.csv``."""
    latency, gate_file, errors = (
        Path(f"{prefix}_{name}.csv") for name in ("latency", "gates", "errors")
    )
    _parent(latency)
    with latency.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(("metric", *_LATENCY_COLUMNS))
        for name, s in result.latency.items():
            values = s.as_dict()
            out.writerow((name, *(values[c] for c in _LATENCY_COLUMNS)))
    with gate_file.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(("gate", "metric", "comparison", "threshold", "measured", "unit", "result"))
        for g in gates:
            measured = "" if g.measured is None else round(g.measured, 6)
            out.writerow(
                (
                    g.name,
                    g.metric,
                    g.comparison,
                    g.threshold,
                    measured,
                    g.unit,
                    "PASS" if g.passed else "FAIL",
                )
            )
    with errors.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(("code", "count", "example"))
        for code, n in result.errors_by_code.items():
            out.writerow((code, n, result.error_details.get(code, "")))
    return [latency, gate_file, errors]


def write_junit(
    path: Path, result: BenchResult, gates: list[GateResult], run: Mapping[str, Any]
) -> None:
    failures = sum(not g.passed for g in gates)
    seconds = f"{result.load_seconds:.3f}"
    suites = ET.Element(
        "testsuites",
        name="qa-ws bench",
        tests=str(len(gates)),
        failures=str(failures),
        errors="0",
        time=seconds,
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"qa-ws bench {result.scenario}",
        tests=str(len(gates)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=seconds,
    )
    props = ET.SubElement(suite, "properties")
    for key, value in run.items():
        ET.SubElement(props, "property", name=str(key), value=str(value))
    for g in gates:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"qa-ws.bench.{result.scenario}",
            name=f"{g.name} {g.comparison} {format_value(g.threshold, g.unit)}",
            time="0",
        )
        if not g.passed:
            failure = ET.SubElement(
                case,
                "failure",
                type="GateFailed",
                message=f"{g.metric}: measured {format_value(g.measured, g.unit)}, "
                f"required {g.comparison} {format_value(g.threshold, g.unit)}",
            )
            failure.text = g.detail
        else:
            ET.SubElement(case, "system-out").text = g.detail
    ET.SubElement(suite, "system-out").text = json.dumps(build_report(result, gates, run), indent=2)
    _parent(path)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def _parent(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "ratio":
        return f"{value * 100:.2f} %"
    if unit == "/s":
        return f"{value:.1f}/s"
    return f"{value:g}"


def render_console(
    result: BenchResult,
    gates: list[GateResult],
    *,
    title: str,
    file: IO[str] | None = None,
    target_users: int | None = None,
) -> None:
    console = Console(file=file, highlight=False, soft_wrap=False)
    if not console.is_terminal and console.width < 120:
        console.width = 120  # CI logs: keep each gate on one line
    figures = Table(title=f"{title}: figures from raw samples", title_justify="left")
    figures.add_column("latency (ms)")
    for column in ("count", "p50", "p95", "p99", "max"):
        figures.add_column(column, justify="right")
    for name, s in result.latency.items():
        label = "deltas per answer" if name == "deltas" else name
        figures.add_row(
            label, str(s.count), f"{s.p50:.1f}", f"{s.p95:.1f}", f"{s.p99:.1f}", f"{s.max:.1f}"
        )
    console.print(figures)
    if result.scenario == "reconnect":
        r = result.reconnect
        console.print(
            f"reconnect: asked {r['asked']}, answered {r['answered']}, resumed {r['resumed']} "
            f"(not resumed {r['not_resumed']}), lost {r['lost']}, duplicated {r['duplicated']}"
        )
    of_target = f" of {target_users}" if target_users else ""
    console.print(
        f"connections: peak {result.held_peak}{of_target}, at end {result.held_end}; "
        f"messages sent {result.messages_sent} ({result.messages_per_second:.1f}/s), "
        f"answers {result.answers} ({result.answers_per_second:.1f}/s)"
        + (f", rate_limited {result.rate_limited}" if result.rate_limited else "")
        + (f", agent events {events}" if (events := result.counters.get("agent_events")) else "")
        + f"; load {result.load_seconds:.1f} s"
    )
    if result.errors_by_code:
        codes = ", ".join(f"{code} {n}" for code, n in result.errors_by_code.items())
        console.print(f"[red]errors[/]: {codes}")
        for code, detail in list(result.error_details.items())[:3]:
            if detail and detail != code and code in result.errors_by_code:
                console.print(f"  {code}: {detail}", markup=False)
    cpu = (
        "n/a"
        if result.cpu_peak is None
        else f"mean {result.cpu_mean:.0f} %, peak {result.cpu_peak:.0f} %"
    )
    procs = f"{result.processes} process" + ("es" if result.processes > 1 else "")
    if result.workers:
        procs = f"{result.workers} Locust workers"
    per_answer = result.cpu_ms_per_answer
    cost = f", {per_answer:.2f} ms CPU per answer" if per_answer is not None else ""
    console.print(f"load generator: {procs}, CPU {cpu}{cost}")
    if result.cpu_saturated:
        console.print(
            "[bold yellow]warning[/]: the load generator saturated its CPU; latencies "
            "include its own queueing (use --processes or more machines)"
        )
    if not result.complete:
        console.print(
            "[bold yellow]warning[/]: some load processes' final reports were lost; "
            "figures are incomplete"
        )
    table = Table(title="gates", title_justify="left")
    for column, justify in (
        ("gate", "left"),
        ("threshold", "right"),
        ("measured", "right"),
        ("result", "center"),
        ("detail", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for g in gates:
        table.add_row(
            f"{g.name} ({g.metric})",
            f"{g.comparison} {format_value(g.threshold, g.unit)}",
            format_value(g.measured, g.unit),
            "[bold green]PASS[/]" if g.passed else "[bold red]FAIL[/]",
            g.detail,
        )
    console.print(table)
