"""``qa-ws bench`` against an agent that uses a tool (tests/tool_agent.py, served by a real
``--serve`` process): its ``agent_event``s are counted, and never end or time an answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qa_ws_cli.cli.main import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # for the served python: agent
    for name in ("QA_WS_TOKEN", "WEBSOCKET_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("scenario", ["chat", "burst"])
def test_agent_events_are_counted_not_timed(tmp_path: Path, scenario: str) -> None:
    args = ["bench", "--serve", "--agent", "python:tests.tool_agent:agent", "--users", "3"]
    args += ["--spawn-rate", "3", "--duration", "3s", "--think-time", "0.2"]
    args += ["--scenario", scenario, "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    throughput = report["throughput"]
    assert throughput["answers"] >= 3
    # every answer had its tool's two events before it (an answer cut off at the end may
    # have had them without its answer)
    assert throughput["agent_events"] >= 2 * throughput["answers"]
    assert report["errors"]["total"] == 0, report["errors"]
    assert "agent_event" not in json.dumps(report["latency_ms"])
