"""Streaming figures, the new gates, stages and baselines, in short real runs (`--serve`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from qa_ws_cli.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("QA_WS_TOKEN", "WEBSOCKET_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)


def bench(*args: str) -> Any:
    return runner.invoke(app, ["bench", *args])


def demo_run(latency_ms: int, *extra: str) -> Any:
    return bench(
        "--serve",
        "--agent",
        "demo",
        "--demo-latency-ms",
        str(latency_ms),
        "--users",
        "8",
        "--spawn-rate",
        "8",
        "--duration",
        "3s",
        "--think-time",
        "0.3",
        *extra,
    )


def gates_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in data["gates"]}


def test_streaming_figures_and_the_new_gates_above_what_the_agent_does(tmp_path: Path) -> None:
    result = demo_run(
        100,
        "--max-ttft-p95-ms",
        "2000",
        "--max-p99-ms",
        "5000",
        "--min-throughput",
        "1",
        "--json",
        "--report-json",
        str(tmp_path / "r.json"),
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # --json: the report itself on stdout
    assert printed == json.loads((tmp_path / "r.json").read_text())
    assert printed["schema"] == "qa-ws-bench/2"
    streaming = printed["streaming"]
    first, whole = streaming["first_delta_ms"], streaming["answer_ms"]
    assert first["count"] >= 8 and whole["count"] >= 8
    for pct in ("p50", "p95", "p99"):
        assert 0 < first[pct] <= whole[pct]
    assert whole["p50"] >= 100  # the agent's own latency
    assert 1 <= streaming["deltas_per_answer"]["p50"] <= 5  # the demo agent's five chunks
    gates = gates_of(printed)
    assert {"time to first delta", "p99 latency", "throughput"} <= set(gates)
    assert all(g["passed"] for g in gates.values())
    assert f"report: {tmp_path / 'r.json'}" in result.stderr.replace("\n", "")


def test_each_new_gate_fails_below_what_the_agent_does(tmp_path: Path) -> None:
    result = demo_run(
        100,
        "--max-ttft-p95-ms",
        "1",
        "--max-p99-ms",
        "50",
        "--min-throughput",
        "10000",
        "--report-json",
        str(tmp_path / "r.json"),
    )
    assert result.exit_code == 1, result.output
    gates = gates_of(json.loads((tmp_path / "r.json").read_text()))
    assert not gates["time to first delta"]["passed"]
    assert gates["time to first delta"]["metric"] == "first_delta.p95"
    assert not gates["p99 latency"]["passed"] and gates["p99 latency"]["measured"] > 100
    assert not gates["throughput"]["passed"]
    assert gates["p95 latency"]["passed"] and gates["error rate"]["passed"]


def test_stages_ramp_to_their_peak_and_down(tmp_path: Path) -> None:
    out = tmp_path / "stages.json"
    html = tmp_path / "stages.html"
    result = bench(
        "--serve",
        "--stages",
        "1s:6,2s:6,1s:0",
        "--report-json",
        str(out),
        "--report-html",
        str(html),
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["run"]["stages"] == "1s:6,2s:6,1s:0" and data["run"]["users"] == 6
    assert data["connections"]["peak"] == 6 and data["connections"]["at_end"] == 0
    page = html.read_text()
    assert "PASS: qa-ws bench chat" in page and page.count("<svg") == 3
    assert "connections held" in page and "srcdoc=" in page


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ("30s", "DURATION:USERS"),
        ("0s:5", "more than 0 s"),
        ("5s:0", "at least one stage"),
        ("soon:5", "not a duration"),
    ],
)
def test_bad_stages_exit_2(stages: str, message: str) -> None:
    result = bench("--serve", "--stages", stages)
    assert result.exit_code == 2 and message in result.output


def test_a_baseline_from_a_fast_run_fails_a_run_with_300_ms_more_latency(tmp_path: Path) -> None:
    fast = tmp_path / "fast.json"
    first = demo_run(50, "--report-json", str(fast), "--max-p95-ms", "2000")
    assert first.exit_code == 0, first.output
    slow = demo_run(
        350,
        "--baseline",
        str(fast),
        "--max-regression",
        "10%",
        "--max-p95-ms",
        "2000",
        "--report-json",
        str(tmp_path / "slow.json"),
    )
    assert slow.exit_code == 1, slow.output
    assert "worse than the baseline" in slow.output and "p95" in slow.output
    gates = gates_of(json.loads((tmp_path / "slow.json").read_text()))
    assert not gates["p95 vs baseline"]["passed"] and not gates["p99 vs baseline"]["passed"]
    assert gates["error rate vs baseline"]["passed"]
    assert gates["p95 latency"]["passed"]  # absolute gates alone would not have caught it
    same = demo_run(50, "--baseline", str(fast), "--max-regression", "1000%")
    assert same.exit_code == 0, same.output


def test_a_baseline_of_another_scenario_or_schema_is_exit_2(tmp_path: Path) -> None:
    other = tmp_path / "idle.json"
    other.write_text(json.dumps({"schema": "qa-ws-bench/2", "run": {"scenario": "idle"}}))
    result = bench("--serve", "--baseline", str(other))
    assert result.exit_code == 2 and "is a 'idle' run" in result.output
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"schema": "qa-ws-bench/1", "run": {"scenario": "chat"}}))
    result = bench("--serve", "--baseline", str(old))
    assert result.exit_code == 2 and "qa-ws-bench/1" in result.output
    result = bench("--serve", "--baseline", str(tmp_path / "missing.json"))
    assert result.exit_code == 2 and "cannot read the baseline" in result.output
    result = bench("--serve", "--baseline", str(other), "--max-regression", "lots")
    assert result.exit_code == 2
