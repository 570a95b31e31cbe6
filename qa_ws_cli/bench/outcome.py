"""From a finished load process to a verdict and the report files (parent side, no Locust).

``judge`` turns the raw measurements into figures and gates (the absolute thresholds plus
the baseline's regression gates); ``write_reports`` writes what was asked for and returns
the paths, so the CLI can say where they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa_ws_cli.bench.baseline import compare
from qa_ws_cli.bench.gates import BenchResult, GateResult, Thresholds, evaluate
from qa_ws_cli.bench.htmlreport import write_html
from qa_ws_cli.bench.reports import build_report, write_csv, write_json, write_junit
from qa_ws_cli.bench.spec import BenchSpec, format_stages


@dataclass(frozen=True, slots=True)
class ReportPaths:
    json: Path | None = None
    csv_prefix: str | None = None
    html: Path | None = None
    junit: Path | None = None


@dataclass(frozen=True, slots=True)
class Baseline:
    path: Path
    report: Mapping[str, Any]
    tolerance: float


@dataclass
class Verdict:
    result: BenchResult
    gates: list[GateResult]
    report: dict[str, Any]
    written: list[Path] = field(default_factory=list)


def run_facts(
    spec: BenchSpec, started_at: str, served: str, raw: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "scenario": spec.scenario,
        "url": spec.url,
        "urls": spec.targets,
        "users": spec.peak_users,
        "spawn_rate": spec.spawn_rate,
        "duration_s": spec.total_seconds,
        "stages": format_stages(spec.stages) if spec.stages else None,
        "think_time_s": spec.load.think(spec.scenario),
        "processes": spec.processes,
        "workers": int(raw.get("workers") or 0),
        "target": served,
        "started_at": started_at,
        "aborted": raw.get("aborted"),
    }


def judge(
    raw: Mapping[str, Any],
    spec: BenchSpec,
    run: dict[str, Any],
    thresholds: Thresholds,
    baseline: Baseline | None = None,
) -> Verdict:
    result = BenchResult.from_raw(
        raw,
        scenario=spec.scenario,
        load_seconds=float(raw.get("load_seconds", 0.0)),
        processes=spec.processes,
    )
    gates = evaluate(result, thresholds)
    if baseline is not None:
        run = {
            **run,
            "baseline": str(baseline.path),
            "max_regression": baseline.tolerance,
        }
        gates += compare(result, baseline.report, baseline.tolerance, baseline.path.name)
    return Verdict(result, gates, build_report(result, gates, run))


def write_reports(
    verdict: Verdict, paths: ReportPaths, raw: Mapping[str, Any], locust_html: str | None
) -> list[Path]:
    result, gates, report = verdict.result, verdict.gates, verdict.report
    written: list[Path] = []
    if paths.json is not None:
        write_json(paths.json, report)
        written.append(paths.json)
    if paths.csv_prefix is not None:
        written += write_csv(paths.csv_prefix, result, gates)
    if paths.junit is not None:
        write_junit(paths.junit, result, gates, report["run"])
        written.append(paths.junit)
    if paths.html is not None:
        write_html(paths.html, report, raw, locust_html)
        written.append(paths.html)
    verdict.written = written
    return written
