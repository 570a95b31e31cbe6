"""The bench's pure parts: percentiles, the recorder and aggregator, gates, spec and tokens.

None of these import Locust, so they run in the test process itself.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import jwt
import pytest

from qa_ws_cli.bench.collect import Aggregator, BenchFailure, Recorder
from qa_ws_cli.bench.gates import (
    BenchResult,
    Thresholds,
    all_passed,
    default_min_connections,
    evaluate,
)
from qa_ws_cli.bench.samples import percentile, saturated, summarize
from qa_ws_cli.bench.spec import BenchSpec, LoadOptions, check_url, is_loopback_host
from qa_ws_cli.bench.tokens import TokenSource
from qa_ws_cli.devsecret import dev_secret_path, keep_dev_secret
from tests.conftest import SECRET

# -- percentiles -------------------------------------------------------------------------


def test_nearest_rank_percentiles_of_one_to_a_hundred() -> None:
    ordered = [float(i) for i in range(1, 101)]
    assert [percentile(ordered, p) for p in (1, 50, 95, 99, 100)] == [1, 50, 95, 99, 100]


def test_nearest_rank_is_a_real_sample_not_an_interpolation() -> None:
    ordered = [15.0, 20.0, 35.0, 40.0, 50.0]  # the textbook nearest-rank example
    assert percentile(ordered, 5) == 15
    assert percentile(ordered, 30) == 20
    assert percentile(ordered, 40) == 20
    assert percentile(ordered, 50) == 35
    assert percentile(ordered, 100) == 50


def test_p95_of_twenty_samples_is_the_nineteenth() -> None:
    ordered = [float(i) for i in range(1, 21)]
    assert percentile(ordered, 95) == 19  # ceil(0.95 * 20) = 19
    assert percentile(ordered, 99) == 20


def test_percentile_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    for p in (0, -1, 100.5):
        with pytest.raises(ValueError, match="percentile"):
            percentile([1.0], p)


def test_summary_sorts_and_keeps_values_locust_would_round() -> None:
    values = [497.3, 12.0, 498.9, 499.6, 3.0] * 4
    random.Random(7).shuffle(values)
    s = summarize(values)
    assert s is not None
    assert (s.count, s.min, s.max) == (20, 3.0, 499.6)
    assert s.p50 == 497.3
    assert s.p95 == 499.6  # Locust's 10 ms buckets would have said 500
    assert math.isclose(s.mean, sum(values) / 20)
    assert summarize([]) is None
    assert s.as_dict()["count"] == 20


def test_saturation_needs_three_busy_seconds_in_a_row() -> None:
    assert not saturated([])
    assert not saturated([99.0, 99.0])
    assert not saturated([95.0, 40.0, 95.0, 40.0, 95.0])
    assert saturated([50.0, 91.0, 95.0, 99.0])
    assert not saturated([90.0, 90.0, 90.0])  # above the threshold, not at it


# -- recorder and aggregator ------------------------------------------------------------


def test_recorder_feeds_locust_and_drains_into_chunks() -> None:
    fired: list[dict[str, Any]] = []
    rec = Recorder(fire=lambda **kw: fired.append(kw))
    rec.connected()
    rec.ok("connect", 12.5)
    rec.ok("chat", 3.0, length=40)
    rec.fail("chat", "agent_busy", 4.0, "at most 4 answers in flight")
    rec.fail("connect", "invalid_token", 1.0, "bad signature")
    rec.fail("connect", "invalid_token", 1.0, "a second detail is not kept")
    rec.count("sent", 2)
    rec.tick(100)
    rec.cpu_window(42.04)
    assert [f["name"] for f in fired] == ["connect", "chat", "chat", "connect", "connect"]
    assert fired[1]["response_length"] == 40 and fired[1]["exception"] is None
    assert isinstance(fired[2]["exception"], BenchFailure)
    assert str(fired[2]["exception"]) == "agent_busy"

    chunk = rec.drain()
    assert chunk["samples"] == {"connect": [12.5], "chat": [3.0]}
    assert chunk["errors"] == {"agent_busy": 1, "invalid_token": 2}
    assert chunk["details"]["invalid_token"] == "bad signature"
    assert chunk["first_connect_error"] == "invalid_token: bad signature"
    assert chunk["ticks"] == [[100, 1]] and chunk["cpu"] == [42.0]
    assert chunk["final"] is False and chunk["held_end"] is None
    empty = rec.drain()
    assert empty["samples"] == {} and empty["errors"] == {} and empty["peak"] == 1


def test_recorder_final_chunk_carries_held_at_end_and_restart_forgets() -> None:
    rec = Recorder()
    for _ in range(3):
        rec.connected()
    rec.disconnected()
    rec.mark_end()
    rec.cpu_warning = True
    final = rec.drain(final=True)
    assert (final["held_end"], final["peak"], final["final"]) == (2, 3, True)
    rec.restart()
    assert rec.peak == 2 and not rec.cpu_warning and rec.held_end is None


def _chunk(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "samples": {},
        "errors": {},
        "details": {},
        "counters": {},
        "ticks": [],
        "cpu": [],
        "peak": 0,
        "cpu_warning": False,
        "first_connect_error": None,
        "final": False,
        "held_end": None,
    }
    base.update(kw)
    return base


def test_aggregator_sums_workers_at_the_same_tick() -> None:
    agg = Aggregator()
    # worker a peaks at tick 11, worker b at tick 12: never 200 at one moment
    agg.add(
        "a",
        _chunk(
            ticks=[[10, 50], [11, 100], [12, 60]],
            peak=100,
            samples={"chat": [1.0, 2.0]},
            counters={"sent": 2},
        ),
    )
    agg.add(
        "b",
        _chunk(
            ticks=[[10, 40], [11, 70], [12, 100]],
            peak=100,
            samples={"chat": [3.0]},
            errors={"agent_busy": 1},
            counters={"sent": 1},
        ),
    )
    assert agg.held_peak() == 170  # tick 11: 100 + 70
    agg.add("a", _chunk(final=True, held_end=55, cpu=[10.0], samples={"connect": [5.0]}))
    raw = agg.raw()
    assert raw["samples"]["chat"] == [1.0, 2.0, 3.0] and raw["samples"]["connect"] == [5.0]
    assert raw["counters"] == {"sent": 3} and raw["errors"] == {"agent_busy": 1}
    assert (raw["nodes"], raw["finals"], raw["held_end"]) == (2, 1, 55)
    assert raw["cpu"] == {"a": [10.0], "b": []}


def test_aggregator_peak_counts_what_every_process_held_at_the_stop() -> None:
    agg = Aggregator()
    # the ticks never line up (one worker's came in late), but both held 6 when the load stopped
    agg.add("a", _chunk(ticks=[[10, 6], [11, 6]], peak=6))
    agg.add("b", _chunk(ticks=[[20, 6]], peak=6))
    assert agg.held_peak() == 6
    agg.add("a", _chunk(final=True, held_end=6))
    agg.add("b", _chunk(final=True, held_end=6))
    assert agg.held_peak() == 12 and agg.raw()["held_end"] == 12


def test_aggregator_peak_is_never_below_one_process_exact_peak() -> None:
    agg = Aggregator()
    agg.add("local", _chunk(ticks=[[1, 3]], peak=9, first_connect_error="connect_refused"))
    agg.add("local", _chunk(first_connect_error="later errors do not replace the first"))
    assert agg.held_peak() == 9
    assert agg.raw()["first_connect_error"] == "connect_refused"
    agg.reset()
    assert agg.held_peak() == 0 and agg.nodes == set()


# -- results and gates -------------------------------------------------------------------


def raw_run(**kw: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "samples": {
            "chat": [float(i) for i in range(1, 101)],
            "connect": [5.0] * 10,
            "first_delta": [1.0] * 100,
        },
        "errors": {},
        "details": {},
        "counters": {"sent": 100, "answered": 100},
        "held_peak": 10,
        "held_end": 10,
        "cpu": {"local": [10.0, 20.0, 30.0]},
        "cpu_warning": False,
        "first_connect_error": None,
        "nodes": 1,
        "finals": 1,
    }
    raw.update(kw)
    return raw


def result_of(scenario: str = "chat", **kw: Any) -> BenchResult:
    return BenchResult.from_raw(raw_run(**kw), scenario=scenario, load_seconds=10.0)


def test_figures_from_raw() -> None:
    r = result_of(
        errors={"agent_busy": 2, "answer_timeout": 0}, counters={"sent": 102, "answered": 100}
    )
    assert r.latency["chat"].p95 == 95 and r.latency["first_delta"].count == 100
    assert "ping" not in r.latency
    assert r.operations == 100 + 10 + 2  # chat + connect + errors; first_delta is no operation
    assert r.errors_by_code == {"agent_busy": 2}
    assert r.error_rate == pytest.approx(2 / 112)
    assert (r.messages_per_second, r.answers_per_second) == (10.2, 10.0)
    assert (r.cpu_mean, r.cpu_peak, r.cpu_saturated) == (20.0, 30.0, False)
    assert r.complete and not r.unreachable


def test_cpu_saturation_from_locust_or_from_our_windows() -> None:
    assert result_of(cpu_warning=True).cpu_saturated
    assert result_of(cpu={"w1": [10.0] * 5, "w2": [95.0] * 3}).cpu_saturated
    assert result_of(cpu={}).cpu_mean is None


def test_unreachable_means_nobody_connected_and_someone_tried() -> None:
    r = result_of(samples={}, errors={"connect_refused": 20}, first_connect_error="connect_refused")
    assert r.unreachable and r.first_connect_error == "connect_refused"
    assert not result_of(samples={}, errors={}).unreachable


def test_lost_final_reports_are_flagged() -> None:
    assert not result_of(nodes=2, finals=1).complete


def test_all_gates_pass() -> None:
    gates = evaluate(result_of(), Thresholds(500.0, 0.0, 10))
    assert [g.name for g in gates] == ["p95 latency", "error rate", "connections"]
    assert all_passed(gates)
    assert gates[0].measured == 95 and gates[0].metric == "chat.p95"
    assert gates[2].measured == 10


def test_p95_gate_boundary_and_failure() -> None:
    r = result_of()
    assert evaluate(r, Thresholds(max_p95_ms=95.0))[0].passed  # equal is within the limit
    failed = evaluate(r, Thresholds(max_p95_ms=94.9))[0]
    assert not failed.passed and "100 samples" in failed.detail


def test_p95_gate_fails_without_samples_and_uses_the_scenario_metric() -> None:
    gate = evaluate(result_of("idle"), Thresholds())[0]
    assert gate.metric == "ping.p95" and gate.measured is None and not gate.passed
    burst = result_of("burst", samples={"burst": [1.0, 2.0]})
    assert evaluate(burst, Thresholds())[0].passed


def test_error_rate_gate() -> None:
    r = result_of(errors={"agent_busy": 1})
    assert not evaluate(r, Thresholds())[1].passed  # default: no error at all
    assert evaluate(r, Thresholds(max_error_rate=0.01))[1].passed  # 1 of 111
    assert not evaluate(r, Thresholds(max_error_rate=0.005))[1].passed
    assert "agent_busy 1" in evaluate(r, Thresholds())[1].detail


def test_error_rate_with_zero_operations_fails() -> None:
    r = result_of(samples={}, errors={})
    assert r.error_rate is None
    gate = evaluate(r, Thresholds(max_error_rate=1.0))[1]
    assert not gate.passed and gate.measured is None and "no operations" in gate.detail


def test_connection_gate_and_its_defaults() -> None:
    r = result_of(held_peak=149)
    assert not evaluate(r, Thresholds(min_connections=150))[2].passed
    assert evaluate(r, Thresholds(min_connections=149))[2].passed
    assert len(evaluate(r, Thresholds(min_connections=None))) == 2
    assert default_min_connections("chat", 150) == 150
    assert default_min_connections("idle", 1000) == 1000
    assert default_min_connections("churn", 150) is None


def test_gate_as_dict_rounds_the_measurement() -> None:
    d = evaluate(result_of(errors={"x": 1}), Thresholds())[1].as_dict()
    assert d["measured"] == round(1 / 111, 6) and d["passed"] is False and d["unit"] == "ratio"


# -- spec and tokens ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.9.8.7", "localhost", "LOCALHOST", "::1", "[::1]"]
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "192.168.1.1", "example.com", "0.0.0.0", "::", "128.0.0.1", ""]
)
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback_host(host)


def test_check_url() -> None:
    assert check_url("ws://127.0.0.1:8765/ws") == "127.0.0.1"
    assert check_url("wss://[::1]:8765/ws") == "::1"
    with pytest.raises(ValueError, match=r"refusing to load-test example\.com"):
        check_url("ws://example.com:8765/ws")
    assert check_url("ws://example.com:8765/ws", allow_remote=True) == "example.com"
    with pytest.raises(ValueError, match="ws:// or wss://"):
        check_url("http://127.0.0.1:8765/ws")
    with pytest.raises(ValueError, match="no host"):
        check_url("ws:///ws")
    with pytest.raises(ValueError, match="bad port"):
        check_url("ws://127.0.0.1:99999/ws")


def test_spec_round_trips_through_json() -> None:
    spec = BenchSpec(
        url="ws://127.0.0.1:1/ws",
        scenario="burst",
        users=7,
        duration_s=3.0,
        load=LoadOptions(think_time_s=0.5, burst_size=4, run_id="abc"),
        html="/tmp/r.html",
        mint_tokens=False,
    )
    assert BenchSpec.from_json(spec.to_json()) == spec
    assert spec.load.think("burst") == 0.5
    assert LoadOptions().think("idle") == 5.0


def test_load_options_from_env() -> None:
    opts = LoadOptions.from_env(
        {
            "QA_WS_THINK_TIME": "0.2",
            "QA_WS_BURST_SIZE": "12",
            "QA_WS_ANSWER_TIMEOUT": " ",
            "QA_WS_MESSAGE": "hi",
        }
    )
    assert (opts.think_time_s, opts.burst_size, opts.answer_timeout_s, opts.message) == (
        0.2,
        12,
        10.0,
        "hi",
    )
    with pytest.raises(ValueError, match="QA_WS_CONNECT_TIMEOUT must be a number"):
        LoadOptions.from_env({"QA_WS_CONNECT_TIMEOUT": "soon"})


def test_tokens_minted_per_user_with_their_own_sub(tmp_path: Any) -> None:
    env = {"WEBSOCKET_SECRET_KEY": SECRET}
    source = TokenSource.from_env(env, config_file="/dev/null", mint=True, ttl_s=120)
    assert source.mints
    a, b = source.for_user("bench-a"), source.for_user("bench-b")
    assert a and b
    claims = jwt.decode(a, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "bench-a" and claims["exp"] - claims["iat"] == 120
    assert jwt.decode(b, SECRET, algorithms=["HS256"])["sub"] == "bench-b"


def test_token_source_choices(tmp_path: Path) -> None:
    empty = {"XDG_STATE_HOME": str(tmp_path)}  # no key, and no dev secret kept there
    fixed = TokenSource.from_env({"QA_WS_TOKEN": "tok", "WEBSOCKET_SECRET_KEY": SECRET})
    assert fixed.for_user("x") == "tok" and not fixed.mints
    assert TokenSource.from_env({"QA_WS_TOKEN": "tok"}, mint=False).for_user("x") == "tok"
    assert TokenSource.from_env(empty, mint=False).for_user("x") is None
    assert TokenSource.from_env(empty, config_file="/dev/null").for_user("x") is None
    with pytest.raises(ValueError, match="cannot mint tokens"):
        TokenSource.from_env(empty, config_file="/dev/null", mint=True)


def test_bench_mints_with_the_dev_secret_when_no_key_is_set(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    kept = keep_dev_secret(dev_secret_path(env))[0]
    source = TokenSource.from_env(env, config_file="/dev/null", mint=True)
    token = source.for_user("bench-a")
    assert token and jwt.decode(token, kept, algorithms=["HS256"])["sub"] == "bench-a"
    # plain locust (mint=None) mints only with a configured key, as before
    assert TokenSource.from_env(env, config_file="/dev/null").for_user("x") is None


def test_spec_problems_name_each_flag() -> None:
    assert BenchSpec(url="ws://127.0.0.1:1/ws").problems() == []
    bad = BenchSpec(
        url="",
        scenario="stampede",  # type: ignore[arg-type]
        users=2,
        spawn_rate=0,
        duration_s=0,
        processes=3,
        load=LoadOptions(think_time_s=-1, answer_timeout_s=0, burst_size=0, message=" "),
    )
    assert bad.problems() == [
        "--spawn-rate must be positive",
        "--duration must be more than 0 and at most 24h",
        "--scenario must be one of chat, idle, burst, churn, reconnect",
        "--processes must not exceed --users",
        "--think-time must not be negative",
        "--answer-timeout must be positive",
        "--burst-size must be at least 1",
        "--message must not be empty",
    ]
    assert BenchSpec(url="", users=0, processes=65).problems()[:2] == [
        "--users must be at least 1",
        "--processes must be between 1 and 64",
    ]
