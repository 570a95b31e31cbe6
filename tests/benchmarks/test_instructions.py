"""``make perf-count`` runs end to end on tiny rounds: real servers under real valgrind.

Nothing about what a count is gets asserted beyond its being counted (chats answered, a dump
read back): the figures belong to docs/performance.md, not to the suite.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

if importlib.util.find_spec("picows") is None:
    if os.environ.get("QA_WS_REQUIRE_ALL") == "1":
        raise ImportError("QA_WS_REQUIRE_ALL=1 but picows (the perf extra) is not installed")
    pytest.skip("the perf extra is not installed (make install-perf)", allow_module_level=True)

from benchmarks import instructions

if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
    if os.environ.get("QA_WS_REQUIRE_ALL") == "1":
        raise ImportError("QA_WS_REQUIRE_ALL=1 but valgrind is not installed")
    pytest.skip("valgrind is not installed (apt-get install valgrind)", allow_module_level=True)


@pytest.mark.timeout(240)
def test_each_server_is_counted_per_chat_and_per_handshake(tmp_path: Path) -> None:
    names = ("bare-uvloop", "qa-ws")
    counted = [instructions.measure(name, tmp_path, 1, 0.5, 4) for name in names]
    quiet = {"WEBSOCKET_LOGGING__LEVEL": "WARNING"}
    counted.append(instructions.measure("set-quiet", tmp_path, 1, 0.5, 4, quiet))
    for c in counted:
        assert len(c.per_chat) == len(c.per_handshake) == 1
        # a chat takes tens of thousands of instructions in any server: a count of a few
        # (a dump read before the load ran) or of zero would be the harness failing
        assert c.per_chat[0] > 10_000 and c.per_handshake[0] > 10_000, c
    text = instructions.render(counted, 1, 0.5, 4)
    assert "| bare aiohttp on uvloop | uvloop |" in text
    # the gate on these real counts: qa-ws does more than bare, so a floor of 1 fails both
    # shares (of qa-ws only: not of the --set variant), and a floor near 0 passes
    assert instructions.gate(counted, 0.01, 0.01) == []
    failures = instructions.gate(counted, 1.0, 1.0)
    assert len(failures) == 2 and all("full features" in f for f in failures), failures
    assert "qa-ws serve, full features, echo agent" in text
    assert "| qa-ws serve, quiet (WEBSOCKET_LOGGING__LEVEL=WARNING) | uvloop |" in text
    assert list(tmp_path.glob("callgrind.qa-ws.*"))  # the dumps stay with the logs
    # each ran with its own settings: the variant logged no INFO line (no "connect")
    assert " connect " in (tmp_path / "qa-ws.log").read_text()
    assert " connect " not in (tmp_path / "set-quiet.log").read_text()


def test_a_variant_is_a_name_and_websocket_variables_and_nothing_else() -> None:
    name, env = instructions.variant("log-json:WEBSOCKET_LOGGING__FORMAT=json,WEBSOCKET_X=a=b")
    assert (name, env) == (
        "set-log-json",
        {"WEBSOCKET_LOGGING__FORMAT": "json", "WEBSOCKET_X": "a=b"},
    )
    for bad in (
        "nameless",
        "Big:WEBSOCKET_A=1",
        "x:PATH=/tmp",
        "x:WEBSOCKET_A",
        "x:",
        ":WEBSOCKET_A=1",
    ):
        with pytest.raises(argparse.ArgumentTypeError, match="expected NAME:WEBSOCKET_KEY"):
            instructions.variant(bad)
    with pytest.raises(SystemExit):  # two variants of one name would share their dumps
        instructions.main(["--set", "a:WEBSOCKET_A=1", "--set", "a:WEBSOCKET_B=2"])


def test_a_dump_is_read_back_as_its_instruction_total(tmp_path: Path) -> None:
    (tmp_path / "callgrind.x.1.1").write_text("events: Ir\nfn=main\n0 5\nsummary: 123456\n")
    assert instructions.dumped_total(tmp_path, "x", set()) == 123456
    with pytest.raises(RuntimeError, match="no dump"):
        instructions.dumped_total(tmp_path, "x", set(tmp_path.iterdir()), timeout_s=0.2)


def test_against_a_revision_runs_that_revisions_package(tmp_path: Path) -> None:
    name, env, label = instructions.checkout("HEAD", tmp_path)
    tree = Path(env["PYTHONPATH"])
    assert name == tree.name and name.startswith("rev-") and label.startswith("qa-ws serve at HEAD")
    assert (tree / "qa_ws_cli" / "cli" / "main.py").is_file()  # the package, as committed
    assert not (tree / "tests").exists()  # nothing else of the repository
    with pytest.raises(RuntimeError, match="not a revision"):
        instructions.checkout("no-such-revision", tmp_path)


def _counted(name: str, loop: str, chat: float, handshake: float) -> instructions.Counted:
    return instructions.Counted(name, loop, name, [chat, chat], [handshake, handshake])


def test_the_gate_compares_each_qa_ws_server_with_bare_on_its_own_loop() -> None:
    counted = [
        _counted("bare", "asyncio", 130_000, 790_000),
        _counted("bare-uvloop", "uvloop", 110_000, 500_000),
        _counted("qa-ws-asyncio", "asyncio", 300_000, 2_000_000),  # 0.433 and 0.395
        _counted("qa-ws", "uvloop", 275_000, 1_250_000),  # 0.400 and 0.400
        _counted("set-x", "uvloop", 900_000, 9_000_000),  # a variant is never gated
    ]
    assert instructions.gate(counted, 0.40, 0.395) == []
    failures = instructions.gate(counted, 0.41, None)
    assert failures == [
        "qa-ws (uvloop): bare's share of a chat's instructions is 0.400, below the floor of 0.41"
    ]
    failures = instructions.gate(counted, None, 0.40)
    assert len(failures) == 1 and failures[0].startswith("qa-ws-asyncio (asyncio): bare's")
    assert "handshake's instructions is 0.395" in failures[0]
    # qa-ws counted on a loop no bare server ran on: a failure, not a pass with nothing compared
    alone = [counted[0], _counted("qa-ws", "uvloop", 1, 1)]
    assert instructions.gate(alone, 0.1, 0.1) == [
        "qa-ws (uvloop): no bare aiohttp on its loop was counted"
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["--only", "qa-ws", "--min-chat-share", "0.3"],  # no bare on its loop
        ["--only", "bare", "bare-uvloop", "--min-handshake-share", "0.3"],  # no qa-ws
        ["--only", "bare", "qa-ws", "--min-chat-share", "0.3"],  # bare on another loop
        ["--min-chat-share", "0"],
        ["--min-handshake-share", "1.5"],
    ],
)
def test_a_floor_needs_a_share_it_can_read(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        instructions.main(argv)
    assert exited.value.code == 2  # refused before any server starts
    assert "floor" in capsys.readouterr().err


def test_redis_puts_every_qa_ws_run_and_no_bare_one_on_the_store() -> None:
    url = "redis://127.0.0.1:6399/0"
    assert instructions._on_redis(("bare-uvloop", None, None), url) == ("bare-uvloop", None, None)
    _, env, label = instructions._on_redis(("qa-ws", None, None), url)
    assert env == {"WEBSOCKET_STORE__URL": url}
    assert label == "qa-ws serve, full features, echo agent, Redis store"
    quiet = {"WEBSOCKET_LOGGING__LEVEL": "WARNING"}
    _, env, label = instructions._on_redis(("set-quiet", quiet, None), url)
    assert env == quiet | {"WEBSOCKET_STORE__URL": url}
    assert label == "qa-ws serve, quiet (WEBSOCKET_LOGGING__LEVEL=WARNING), Redis store"
    _, env, label = instructions._on_redis(("rev-abc", {"PYTHONPATH": "/t"}, "at HEAD"), url)
    assert (
        env == {"PYTHONPATH": "/t", "WEBSOCKET_STORE__URL": url} and label == "at HEAD, Redis store"
    )
