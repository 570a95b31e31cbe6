"""`qa-ws bench` for real: a served gateway, Locust in its own process, gates and exit codes.

Each run is a few seconds of real load on loopback; the whole module stays under a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.bench.gates import BenchResult, Thresholds
from qa_ws_cli.bench.outcome import ReportPaths
from qa_ws_cli.bench.spec import BenchSpec, LoadOptions
from qa_ws_cli.cli import bench as bench_cli
from qa_ws_cli.cli.main import app
from qa_ws_cli.devsecret import dev_secret_path, keep_dev_secret
from tests.bench.load_process import run_load_process
from tests.conftest import SECRET, ServerProcess, make_settings, server_env

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No configs/default.yaml from the checkout, no token or key from the developer's shell,
    nor the development secret their `qa-ws serve --dev` keeps."""
    monkeypatch.chdir(tmp_path)
    for name in ("QA_WS_TOKEN", "WEBSOCKET_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def bench(*args: str) -> Any:
    return runner.invoke(app, ["bench", *args])


def report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_the_cli_process_never_imports_locust_or_gevent() -> None:
    code = (
        "import sys, qa_ws_cli.cli.main, qa_ws_cli.cli.bench, qa_ws_cli.bench.launch, "
        "qa_ws_cli.bench.reports; "
        "assert 'gevent' not in sys.modules and 'locust' not in sys.modules, "
        "sorted(m for m in sys.modules if 'gevent' in m or 'locust' in m)"
    )
    # without coverage's start-up hook: the measuring tool may import gevent itself
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--users", "0"], "--users must be at least 1"),
        (
            ["--scenario", "stampede"],
            "--scenario must be one of chat, idle, burst, churn, reconnect",
        ),
        (["--duration", "soon"], "--duration"),
        (["--duration", "0s"], "--duration must be more than 0"),
        (["--serve", "--url", "ws://127.0.0.1:1/ws"], "exclude each other"),
        (["--agent", "demo"], "--agent needs --serve"),
        (["--max-error-rate", "5"], "fraction"),
        (["--processes", "3", "--users", "2"], "must not exceed --users"),
    ],
)
def test_bad_options_exit_2_before_anything_starts(args: list[str], message: str) -> None:
    result = bench(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.parametrize("url", ["ws://example.com:8765/ws", "ws://10.1.2.3:8765/ws"])
def test_a_remote_target_is_refused_without_allow_remote(url: str) -> None:
    result = bench("--url", url, "--duration", "2s")
    assert result.exit_code == 2
    assert "--allow-remote" in result.output


def test_an_unreachable_server_exits_2() -> None:
    result = bench("--url", "ws://127.0.0.1:1/ws", "--users", "5", "--duration", "2s")
    assert result.exit_code == 2
    assert "cannot reach 127.0.0.1:1" in result.output


def test_a_refused_token_exits_2(spawn_server: Callable[..., ServerProcess]) -> None:
    server = spawn_server("--agent", "echo")
    result = bench("--url", server.url, "--token", "not-a-jwt", "--duration", "2s")
    assert result.exit_code == 2
    assert "HTTP 401 invalid_token" in result.output


def test_without_token_or_key_it_says_how_to_get_one(
    spawn_server: Callable[..., ServerProcess],
) -> None:
    server = spawn_server("--agent", "echo")
    result = bench("--url", server.url, "--duration", "2s")
    assert result.exit_code == 2
    assert "pass --token, or --serve" in result.output


def test_with_the_dev_secret_against_a_server_with_another_key_it_says_so(
    spawn_server: Callable[..., ServerProcess],
) -> None:
    server = spawn_server("--agent", "echo")  # signs with tests.conftest.SECRET
    keep_dev_secret(dev_secret_path())  # what `qa-ws serve --dev` keeps: another key
    result = bench("--url", server.url, "--users", "2", "--duration", "2s")
    assert result.exit_code == 2
    assert result.output.startswith(
        "error: the server refused the connection: HTTP 401 invalid_token: "
        "the token's signature is invalid; the users' tokens are signed with this shell's key"
    )
    assert "set WEBSOCKET_SECRET_KEY to the server's key, or pass --token" in result.output


def test_a_short_chat_run_passes_and_writes_every_report(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    result = bench(
        "--serve",
        "--users",
        "20",
        "--spawn-rate",
        "20",
        "--duration",
        "4s",
        "--report-json",
        str(out / "bench.json"),
        "--report-csv",
        str(out / "csv" / "bench"),
        "--report-html",
        str(out / "bench.html"),
        "--report-junit",
        str(out / "bench.xml"),
    )
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "FAIL" not in result.output
    data = report(out / "bench.json")
    assert data["passed"] is True and data["run"]["users"] == 20
    assert data["connections"]["peak"] == 20 and data["connections"]["at_end"] == 20
    chat = data["latency_ms"]["chat"]
    assert chat["count"] >= 20 and 0 < chat["p50"] <= chat["p95"] <= chat["p99"] <= chat["max"]
    assert data["errors"]["total"] == 0 and data["throughput"]["answers"] >= 20
    assert data["generator"]["all_reports_received"] is True
    assert [g["passed"] for g in data["gates"]] == [True, True, True]
    assert f"report: {out / 'bench.json'}" in result.output.replace("\n", "")
    cases = ET.parse(out / "bench.xml").getroot().findall("./testsuite/testcase")
    assert len(cases) == 3 and all(c.find("failure") is None for c in cases)
    html = (out / "bench.html").read_text()
    assert html.index("PASS: qa-ws bench chat") < html.index("Gates") < html.index("srcdoc=")
    assert "templateArgs" in html and "&quot;name&quot;: &quot;chat&quot;" in html
    csv_names = sorted(p.name for p in (out / "csv").iterdir())
    assert csv_names == [
        "bench_errors.csv",
        "bench_exceptions.csv",
        "bench_failures.csv",
        "bench_gates.csv",
        "bench_latency.csv",
        "bench_stats.csv",
        "bench_stats_history.csv",
    ]
    stats = (out / "csv" / "bench_stats.csv").read_text().splitlines()
    assert stats[0].startswith("Type,Name,Request Count")
    chat_row = next(line for line in stats if line.startswith("WS,chat,"))
    assert int(chat_row.split(",")[2]) == chat["count"]  # Locust saw every raw sample too


def test_a_slow_agent_fails_the_p95_gate_with_exit_1(tmp_path: Path) -> None:
    result = bench(
        "--serve",
        "--agent",
        "demo",
        "--demo-latency-ms",
        "700",
        "--users",
        "10",
        "--spawn-rate",
        "10",
        "--duration",
        "3s",
        "--max-p95-ms",
        "500",
        "--report-json",
        str(tmp_path / "slow.json"),
        "--report-junit",
        str(tmp_path / "slow.xml"),
    )
    assert result.exit_code == 1, result.output
    data = report(tmp_path / "slow.json")
    p95 = data["gates"][0]
    assert p95["metric"] == "chat.p95" and not p95["passed"] and p95["measured"] > 700
    assert data["latency_ms"]["first_delta"]["p50"] < data["latency_ms"]["chat"]["p50"]
    failure = ET.parse(tmp_path / "slow.xml").getroot().find("./testsuite/testcase/failure")
    assert failure is not None and "chat.p95" in (failure.get("message") or "")


@pytest.mark.parametrize("scenario", ["idle", "burst", "churn"])
def test_other_scenarios(scenario: str, tmp_path: Path) -> None:
    out = tmp_path / f"{scenario}.json"
    extra = ["--think-time", "0.5"] if scenario == "idle" else []
    result = bench(
        "--serve",
        "--scenario",
        scenario,
        "--users",
        "10",
        "--spawn-rate",
        "10",
        "--duration",
        "2.5s" if scenario == "churn" else "1.5s",  # churn: time for users to come back
        "--report-json",
        str(out),
        *extra,
    )
    assert result.exit_code == 0, result.output
    data = report(out)
    gates = {g["name"]: g for g in data["gates"]}
    if scenario == "idle":
        assert gates["p95 latency"]["metric"] == "ping.p95"
        assert data["latency_ms"]["ping"]["count"] >= 10
        assert data["connections"]["peak"] == 10
    elif scenario == "burst":
        assert gates["p95 latency"]["metric"] == "burst.p95"
        assert data["throughput"]["rate_limited"] > 0 and data["throughput"]["answers"] > 0
    else:
        assert "connections" not in gates  # churn users leave on purpose
        assert data["connections"]["connects_ok"] > 10 and data["connections"]["at_end"] <= 10


def test_processes_split_the_users_and_still_gate_on_all_raw_samples(tmp_path: Path) -> None:
    out = tmp_path / "p2.json"
    result = bench(
        "--serve",
        "--users",
        "12",
        "--spawn-rate",
        "12",
        "--duration",
        "3s",
        "--processes",
        "2",
        "--report-json",
        str(out),
    )
    assert result.exit_code == 0, result.output
    data = report(out)
    assert data["generator"]["processes"] == 2 and data["generator"]["all_reports_received"]
    assert data["connections"]["peak"] == 12 and data["connections"]["at_end"] == 12
    assert data["latency_ms"]["connect"]["count"] == 12
    assert data["latency_ms"]["chat"]["count"] == data["throughput"]["answers"] >= 12


def test_plain_locust_runs_the_locustfile(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = spawn_server("--agent", "echo")
    env = server_env(tmp_path, QA_WS_MIN_CONNECTIONS="5")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "loadtests" / "locustfile.py"),
            "--headless",
            "-u",
            "5",
            "-r",
            "5",
            "-t",
            "3s",
            "--host",
            server.url,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "figures from raw samples" in proc.stderr
    assert proc.stderr.count("PASS") == 3 and "FAIL" not in proc.stderr
    assert "WS       chat" in proc.stdout + proc.stderr  # Locust's own table saw the samples


def test_plain_locust_refuses_a_remote_host(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "loadtests" / "locustfile.py"),
            "--headless",
            "-u",
            "1",
            "-r",
            "1",
            "-t",
            "1s",
            "--host",
            "ws://example.com/ws",
        ],
        cwd=tmp_path,
        env=server_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "QA_WS_ALLOW_REMOTE" in proc.stderr


def test_locust_events_reach_the_result(tmp_path: Path) -> None:
    """Locust fires cpu_warning after 10 s above 90 %, user_error on a bug in a user: fire
    them in a real (monkey-patched) Locust process and follow them into the result."""
    script = textwrap.dedent("""
        from locust.env import Environment
        import json
        from qa_ws_cli.bench.gates import BenchResult
        from qa_ws_cli.bench.hooks import install, state_of, thresholds_from_env
        from qa_ws_cli.bench.spec import LoadOptions
        from qa_ws_cli.bench.tokens import TokenSource
        from qa_ws_cli.bench.users import ChatUser
        env = Environment(user_classes=[ChatUser], host="ws://127.0.0.1:1/ws")
        problems = []
        for call in (lambda: state_of(env), lambda: install(env, LoadOptions(), TokenSource())):
            try:
                call()
            except RuntimeError as exc:
                problems.append(str(exc))
        runner = env.create_local_runner()
        state = install(env, LoadOptions(), TokenSource())
        assert state.load_seconds == 0.0
        env.events.test_start.fire(environment=env)
        env.events.cpu_warning.fire(environment=env, cpu_usage=97.0)
        env.events.user_error.fire(user_instance=None, exception=KeyError("x"), tb=None)
        runner.stop()
        raw = state.aggregator.raw()
        result = BenchResult.from_raw(raw, scenario="chat", load_seconds=1.0)
        gates = thresholds_from_env({"QA_WS_MAX_P95_MS": "250", "QA_WS_MAX_ERROR_RATE": "0.5",
                                     "QA_WS_MIN_CONNECTIONS": "7"}, 10, "chat")
        print(json.dumps({"warning": raw["cpu_warning"], "saturated": result.cpu_saturated,
                          "errors": raw["errors"], "problems": problems,
                          "gates": [gates.max_p95_ms, gates.max_error_rate, gates.min_connections],
                          "defaults": thresholds_from_env({}, 10, "churn").min_connections}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["warning"] is True and out["saturated"] is True
    assert out["errors"] == {"client_exception": 1}
    assert len(out["problems"]) == 2
    assert "install(environment" in out["problems"][0]
    assert "create the runner" in out["problems"][1]
    assert out["gates"] == [250.0, 0.5, 7] and out["defaults"] is None


def test_the_load_process_gives_up_when_no_user_can_connect(tmp_path: Path) -> None:
    spec = BenchSpec(
        url="ws://127.0.0.1:1/ws",
        users=3,
        spawn_rate=10,
        duration_s=20.0,
        load=LoadOptions(think_time_s=0.1),
        mint_tokens=False,
    )
    proc = run_load_process(tmp_path, spec.to_json())
    assert proc.returncode == 0, proc.stderr
    raw = json.loads((tmp_path / "result.json").read_text())
    assert raw["aborted"] == "every user's first connection failed"
    assert raw["load_seconds"] < 10
    result = BenchResult.from_raw(raw, scenario="chat", load_seconds=raw["load_seconds"])
    assert result.unreachable and result.errors_by_code["connect_refused"] >= 3
    assert "connect_refused" in (result.first_connect_error or "")
    with pytest.raises(typer.Exit) as exit_info:
        bench_cli._finish(raw, spec, {"scenario": "chat"}, Thresholds(), None, ReportPaths(), False)
    assert exit_info.value.exit_code == 2


def test_the_load_process_exits_3_when_it_cannot_mint_tokens(tmp_path: Path) -> None:
    env = {**server_env(tmp_path), "WEBSOCKET_SECRET_KEY": ""}
    proc = run_load_process(
        tmp_path,
        json.dumps({"url": "ws://127.0.0.1:1/ws", "scenario": "chat", "processes": 1}),
        env,
    )
    assert proc.returncode == 3
    assert "cannot mint tokens" in proc.stderr


def test_one_token_for_all_users_meets_the_per_user_cap(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """--token: every user is the same sub, so the server's 10 connections per user bite."""
    server = spawn_server("--agent", "echo")
    token = issue_token(make_settings(tmp_path), "one-user", ttl_s=600)[0]
    out = tmp_path / "t.json"
    result = bench(
        "--url",
        server.url,
        "--token",
        token,
        "--users",
        "12",
        "--spawn-rate",
        "12",
        "--duration",
        "1.5s",
        "--report-json",
        str(out),
    )
    assert result.exit_code == 1, result.output
    data = report(out)
    assert data["connections"]["peak"] == 10
    assert data["errors"]["by_code"]["too_many_connections"] >= 2
    assert [g["passed"] for g in data["gates"]] == [True, False, False]


def test_answers_slower_than_the_answer_timeout_are_errors(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = spawn_server("--agent", "demo", "--demo-latency-ms", "2000")  # first delta: 0.67 s
    monkeypatch.setenv("WEBSOCKET_SECRET_KEY", SECRET)
    out = tmp_path / "slow.json"
    result = bench(
        "--url",
        server.url,
        "--users",
        "3",
        "--spawn-rate",
        "10",
        "--duration",
        "2s",
        "--answer-timeout",
        "1",
        "--report-json",
        str(out),
    )
    assert result.exit_code == 1, result.output
    data = report(out)
    assert data["errors"]["by_code"]["answer_timeout"] >= 3
    assert "chat" not in data["latency_ms"] and data["latency_ms"]["first_delta"]["count"] >= 3


def test_a_burst_the_server_allows_is_an_error(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = spawn_server("--agent", "echo")  # default limit: 10 messages a second per user
    monkeypatch.setenv("WEBSOCKET_SECRET_KEY", SECRET)
    out = tmp_path / "burst.json"
    result = bench(
        "--url",
        server.url,
        "--scenario",
        "burst",
        "--burst-size",
        "3",
        "--users",
        "2",
        "--spawn-rate",
        "2",
        "--duration",
        "1.5s",
        "--report-json",
        str(out),
    )
    assert result.exit_code == 1, result.output
    data = report(out)
    assert data["errors"]["by_code"]["not_rate_limited"] >= 2
    assert data["throughput"]["rate_limited"] == 0


def test_a_server_that_cannot_start_is_exit_2() -> None:
    result = bench("--serve", "--agent", "no-such-agent", "--duration", "2s")
    assert result.exit_code == 2
    assert "the local server did not start" in result.output and "no-such-agent" in result.output


def test_a_broken_config_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("websocket:\n  server:\n    port: -5\n")
    result = bench("--serve", "--config", str(bad), "--duration", "2s")
    assert result.exit_code == 2
    assert "websocket.server.port" in result.output


def test_a_load_process_that_dies_is_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's side of a crashed load process (the process itself is faked here)."""
    from qa_ws_cli.bench import launch

    monkeypatch.setattr(
        launch, "run_load_process", lambda *a, **kw: launch.LoadRun(3, None, "Traceback ...\nboom")
    )
    result = bench("--serve", "--users", "1", "--duration", "1s")
    assert result.exit_code == 2
    assert "the load process failed (exit 3)" in result.output and "boom" in result.output


def test_help_shows_examples_and_the_shared_option_names() -> None:
    result = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = result.output
    assert "Examples:" in text and "qa-ws bench --serve --users 150" in text
    assert "--duration" in text and "-d" in text and "-t," not in text  # -t is --token elsewhere
    assert "--json " in text and "--report-json" in text and "--report-html" in text
