"""``History``: a session's turns, read as ``Turn``s by the agents that look at them."""

from __future__ import annotations

from qa_ws_cli.agents.base import ChatContext, History, Turn


def test_history_reads_each_pair_as_a_user_then_an_assistant_turn() -> None:
    history = History((("what is a smoke test?", "a quick check"), ("and a soak?", "a long one")))
    turns = (
        Turn("user", "what is a smoke test?"),
        Turn("assistant", "a quick check"),
        Turn("user", "and a soak?"),
        Turn("assistant", "a long one"),
    )
    assert len(history) == 4 and list(history) == list(turns)
    assert history[1] == turns[1] and history[-2:] == turns[2:]
    assert history == turns and hash(history) == hash(turns)
    assert [t.role for t in reversed(history)] == ["assistant", "user"] * 2
    assert History() == () and not History()


def test_a_context_with_a_history_compares_and_hashes_as_one_with_the_same_turns() -> None:
    pairs = (("q", "a"),)
    lazy = ChatContext("s", "u", "m1", History(pairs))
    plain = ChatContext("s", "u", "m1", (Turn("user", "q"), Turn("assistant", "a")))
    assert lazy == plain and hash(lazy) == hash(plain)
    assert "Turn(role='user', content='q')" in repr(lazy)
