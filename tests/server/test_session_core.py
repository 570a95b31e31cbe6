"""``SessionCore``'s rules, fed inputs and read outputs: no socket, no event loop, no store."""

from __future__ import annotations

import json
from typing import Any

from qa_ws_cli.protocol.codes import CloseCode
from qa_ws_cli.server.session_core import CoreLimits, SessionCore, with_seq
from qa_ws_cli.server.session_outputs import (
    Answered,
    CancelRemote,
    CancelRun,
    Claim,
    Claimed,
    CloseConnection,
    Output,
    Publish,
    RateLimited,
    RunningElsewhere,
    SendFrame,
    StartRun,
)
from qa_ws_cli.server.session_store import replay_after


def core(**limits: Any) -> SessionCore:
    session = SessionCore("s1", "alice", CoreLimits(**limits))
    assert session.attach("c1") == []
    return session


def body(out: Output) -> dict[str, Any]:
    assert isinstance(out, Publish | SendFrame)
    data: dict[str, Any] = json.loads(out.body if isinstance(out, Publish) else out.frame)
    return data


def started(session: SessionCore, chat_id: str = "q1", now: float = 100.0) -> StartRun:
    assert session.chat("c1", chat_id, "how?", draining=False) == [Claim(chat_id)]
    (start,) = session.claimed(chat_id, Claimed((("earlier", "answer"),)), now)
    assert isinstance(start, StartRun)
    return start


def test_a_chat_is_claimed_then_started_with_its_history() -> None:
    session = core()
    start = started(session)
    assert (start.chat_id, start.content, start.origin) == ("q1", "how?", "c1")
    assert start.history == (("earlier", "answer"),)
    assert session.inflight("c1") == 1


def test_the_answer_is_published_with_its_turn_and_releases_the_claim() -> None:
    session = core()
    started(session, now=100.0)
    delta = session.piece("q1", "part")
    assert delta is not None and delta.conn == "c1"
    assert json.loads(delta.frame) == {**json.loads(delta.frame), "delta": "part"}
    assert session.piece("q1", "") is None
    (out,) = session.finished("q1", "partial answer", now=100.25)
    assert isinstance(out, Publish) and out.answer and out.release
    assert out.turn == ("how?", "partial answer") and out.reply_to == "q1"
    event = body(out)
    assert (event["type"], event["content"], event["latency_ms"]) == (
        "agent_response",
        "partial answer",
        250.0,
    )
    assert "seq" not in event  # the store gives it its seq
    assert session.inflight() == 0


def test_an_answered_id_gets_the_stored_frame_and_no_second_run() -> None:
    session = core()
    session.chat("c1", "q1", "how?", draining=False)
    assert session.claimed("q1", Answered('{"seq":3}'), 1.0) == [SendFrame("c1", '{"seq":3}')]
    assert session.inflight() == 0


def test_an_id_running_on_another_instance_is_attached_and_cancel_is_relayed() -> None:
    session = core()
    session.chat("c1", "q1", "how?", draining=False)
    assert session.claimed("q1", RunningElsewhere("other"), 1.0) == []
    # a resend asks the store again: answered meanwhile, or still running there
    assert session.chat("c1", "q1", "how?", draining=False) == [Claim("q1")]
    assert session.claimed("q1", RunningElsewhere("other"), 1.0) == []
    assert session.cancel("c1", "x1", "q1") == [CancelRemote("q1", "x1", "c1")]
    assert session.remote_frame('{"seq":9}', "q1") == [SendFrame("c1", '{"seq":9}')]
    assert not session.remote


def test_a_counted_claim_over_the_rate_limit_is_refused_and_nothing_runs() -> None:
    session = core()
    assert session.chat("c1", "q1", "how?", draining=False) == [Claim("q1")]
    (refused,) = session.claimed("q1", RateLimited(2.5), 100.0)
    assert isinstance(refused, Publish) and refused.error == "rate_limited"
    assert {k: v for k, v in body(refused).items() if k != "ts"} == {
        "type": "error",
        "code": "rate_limited",
        "message": "too many messages; slow down",
        "reply_to": "q1",
        "retry_after": 2.5,
    }
    assert session.inflight() == 0  # a resend after the wait is a new claim
    assert session.chat("c1", "q1", "how?", draining=False) == [Claim("q1")]


def test_a_resend_while_in_flight_is_attached() -> None:
    session = core()
    started(session)
    assert session.chat("c1", "q1", "how?", draining=False) == []


def test_a_disconnect_never_cancels_and_the_answer_is_still_published() -> None:
    session = core()
    started(session)
    session.detach("c1")
    assert session.piece("q1", "lost piece") is None  # deltas are live only
    (out,) = session.finished("q1", "done", now=101.0)
    assert isinstance(out, Publish) and body(out)["content"] == "done"


def test_cancel_stops_the_run_and_stopped_says_cancelled() -> None:
    session = core()
    started(session)
    assert session.cancel("c1", "x1", "q1") == [CancelRun("q1")]
    assert session.cancel("c1", "x2", "q1") == []  # once
    (out,) = session.stopped("q1")
    assert isinstance(out, Publish) and out.release
    assert (body(out)["code"], body(out)["reply_to"]) == ("cancelled", "q1")


def test_cancel_while_claiming_publishes_cancelled_without_starting() -> None:
    session = core()
    session.chat("c1", "q1", "how?", draining=False)
    assert session.cancel("c1", "x1", "q1") == []
    (out,) = session.claimed("q1", Claimed(), 1.0)
    assert isinstance(out, Publish) and body(out)["code"] == "cancelled"


def test_cancel_of_an_id_not_in_flight_is_answered_not_in_flight() -> None:
    (out,) = core().cancel("c1", "x1", "nothing")
    assert isinstance(out, Publish)
    assert (body(out)["code"], body(out)["reply_to"]) == ("not_in_flight", "x1")


def test_the_deadline_stops_the_run_as_a_timeout() -> None:
    session = core(timeout_s=5.0)
    started(session, now=100.0)
    assert session.next_deadline() == 105.0
    assert session.tick(104.9) == []
    assert session.tick(105.0) == [CancelRun("q1")]
    assert session.tick(106.0) == []  # once
    (out,) = session.stopped("q1")
    assert body(out)["code"] == "agent_timeout"


def test_a_stop_without_a_reason_publishes_nothing_so_the_claim_lapses() -> None:
    session = core()
    started(session)
    assert session.stopped("q1") == []


def test_the_per_connection_cap_and_draining_answer_agent_busy() -> None:
    session = core(max_inflight_per_connection=1)
    started(session)
    (busy,) = session.chat("c1", "q2", "again", draining=False)
    assert body(busy)["code"] == "agent_busy" and body(busy)["retry_after"] == 1.0
    (restarting,) = core().chat("c1", "q3", "x", draining=True)
    assert body(restarting)["code"] == "agent_busy"


def test_content_too_long_is_refused() -> None:
    (out,) = core(max_content_chars=3).chat("c1", "q1", "four", draining=False)
    assert isinstance(out, Publish) and body(out)["code"] == "message_too_large"


def test_errors_for_a_connection_that_does_not_hold_the_session_are_live_and_anonymous() -> None:
    session = core()
    (out,) = session.error("c2", "rate_limited", "slow down", "q1", 1.5)
    assert isinstance(out, SendFrame) and out.conn == "c2"
    assert body(out)["reply_to"] is None and body(out)["retry_after"] == 1.5


def test_an_error_answering_a_chat_carries_its_anonymous_frame_for_an_answered_id() -> None:
    """The core does not know the answered ids: the store keeps the error only if the chat
    was not answered, else its ``instead`` goes out (no reply_to, no seq)."""
    (out,) = core().error("c1", "message_too_large", "too long", "q1")
    assert isinstance(out, Publish) and body(out)["reply_to"] == "q1"
    assert out.instead is not None and out.instead.conn == "c1"
    assert json.loads(out.instead.frame)["reply_to"] is None


def test_attaching_a_second_connection_closes_the_first() -> None:
    session = core()
    assert session.attach("c2") == [
        CloseConnection("c1", CloseCode.NORMAL, "session resumed on another connection")
    ]
    session.detach("c1")  # the old connection's detach does not detach the new one
    assert session.attached == "c2"


def test_interrupted_runs_are_published_once_and_only_while_still_claimed() -> None:
    session = core()
    session.running_elsewhere(["q1"])
    (out,) = session.interrupted(["q1"])
    assert isinstance(out, Publish) and out.only_if_claimed and out.release
    assert (body(out)["code"], body(out)["retry_after"]) == ("agent_interrupted", 1.0)
    assert not session.remote


def test_system_events_go_to_the_attached_connection_only() -> None:
    session = core()
    (out,) = session.system("c1", event="token_expiring", expires_at="x")
    assert body(out)["event"] == "token_expiring"
    assert session.system("c2", event="token_expiring", expires_at="x") == []
    session.detach("c1")
    assert session.system(None, event="broadcast", message="m") == []


def test_with_seq_puts_the_seq_into_the_frame() -> None:
    assert json.loads(with_seq('{"type":"x"}', 7)) == {"seq": 7, "type": "x"}


def test_replay_after_fills_a_gap_or_says_it_cannot() -> None:
    events = [(2, 10.0, "f2"), (3, 20.0, "f3"), (4, 30.0, "f4")]
    assert replay_after(events, 4, 1, horizon=0.0) == ["f2", "f3", "f4"]
    assert replay_after(events, 4, 3, horizon=0.0) == ["f4"]
    assert replay_after(events, 4, 4, horizon=0.0) == []
    assert replay_after(events, 4, 0, horizon=0.0) is None  # seq 1 is gone
    assert replay_after(events, 4, 2, horizon=25.0) is None  # seq 3 is too old
    assert replay_after(events, 4, 5, horizon=0.0) is None  # ahead of the session
    assert replay_after(events, 4, -1, horizon=0.0) is None
