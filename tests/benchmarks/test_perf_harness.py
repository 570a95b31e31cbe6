"""The perf harness runs end to end once, on tiny rounds, so it cannot rot unnoticed.

It starts every real server (bare aiohttp, uvloop, python-socketio, ``qa-ws serve`` with auth,
with the Redis store on a real redis-server, with the streaming agent) and the picows load
generator, and checks that each measurement counted work without errors. Never a timed
assertion: what a figure is does not matter here, only that it was measured.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

if importlib.util.find_spec("picows") is None:
    if os.environ.get("QA_WS_REQUIRE_ALL") == "1":
        raise ImportError("QA_WS_REQUIRE_ALL=1 but picows (the perf extra) is not installed")
    pytest.skip("the perf extra is not installed (make install-perf)", allow_module_level=True)

from benchmarks import budget, perf, report
from benchmarks.wire import parse_stream_request, stream_request


def _need_redis() -> None:
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed"
        if os.environ.get("QA_WS_REQUIRE_ALL") == "1":
            pytest.fail(f"QA_WS_REQUIRE_ALL=1 but {reason}")
        pytest.skip(reason)


@pytest.mark.timeout(90)
def test_the_smoke_plan_measures_every_server(tmp_path: Path) -> None:
    _need_redis()
    results, text = perf.run(perf.SMOKE, tmp_path / "perf.json")
    assert set(results["chat"]) >= {"bare", "socketio", "qa-ws", "qa-ws-redis"}
    for name, rounds in results["chat"].items():
        assert rounds[0]["chats"] > 0, name
        assert rounds[0]["errors"] == 0, (name, rounds[0]["first_error"])
    for name, rounds in results["stream"].items():
        assert rounds[0]["deltas"] >= 10, name  # at least one whole streamed answer
        assert results["paced"][name][0]["delta_latency_p50_ms"] > 0, name
    assert all(row["connections"] == 20 for row in results["idle"].values())
    assert all(r[0]["handshakes"] > 0 for r in results["handshake"].values())
    assert results["loops"]["qa-ws"] in ("asyncio", "uvloop")
    for label in ("bare aiohttp", "python-socketio", "Redis store vs memory store", "KiB each"):
        assert label in text
    assert (tmp_path / "perf.json").is_file()


def test_the_stream_request_round_trips_and_bad_content_is_a_plain_chat() -> None:
    assert parse_stream_request(stream_request(100, 0)) == (100, 0.0)
    assert parse_stream_request(stream_request(5, 2)) == (5, 0.002)
    assert parse_stream_request("stream lots 1") is None
    assert parse_stream_request("how do I test a login form?") is None
    assert parse_stream_request("stream 99999999 99999") == (10_000, 1.0)  # bounded


def test_a_sample_goes_to_the_stage_of_its_innermost_known_frame(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks.txt"
    stacks.write_text(
        "command (qa_ws_cli/cli/serve.py:75);FrameHandler.on_chat (qa_ws_cli/server/chat.py:9);"
        "Logger.info (logging/__init__.py:1) 7\n"
        "command (qa_ws_cli/cli/serve.py:75);FrameHandler.on_text (qa_ws_cli/server/chat.py:2);"
        "decode_client (qa_ws_cli/protocol/codec.py:24);TypeAdapter.validate_json (x.py:1) 3\n"
        "command (qa_ws_cli/cli/serve.py:75);BaseEventLoop._run_once (asyncio/base_events.py:1) 5\n"
        "FrameHandler.on_chat (qa_ws_cli/server/chat.py:9);MemoryStore.claim "
        "(qa_ws_cli/server/store.py:1);MemoryRateLimiter.count "
        "(qa_ws_cli/server/memory_limits.py:5) 2\n"
        "SessionDriver.claim (qa_ws_cli/server/driver.py:1);SessionCore.claimed "
        "(qa_ws_cli/server/session_core.py:2) 4\n"
        "RequestHandler.data_received (aiohttp/web_protocol.py:1);MaskedFramesOnly.feed_data "
        "(qa_ws_cli/server/masking.py:86) 6\n"
        "SessionDriver.publish (qa_ws_cli/server/driver.py:1) 1\n"
        "not a stack line\n"
    )
    samples = budget.read_stacks(stacks)
    assert samples == Counter(
        {
            "log": 7,
            "decode": 3,
            budget.OTHER: 5,
            "limit": 2,
            "session (core, store)": 4,
            "socket read, frame parse (aiohttp, the mask check)": 6,
            "dispatch (chat handler, driver, run)": 1,
        }
    )


def test_ratios_are_paired_within_a_round() -> None:
    rounds = {
        "bare": [{"chats_per_s": 100.0}, {"chats_per_s": 50.0}],
        "qa-ws": [{"chats_per_s": 50.0}, {"chats_per_s": 25.0}],
    }
    assert report.paired(rounds, "qa-ws", "bare", "chats_per_s") == 0.5
