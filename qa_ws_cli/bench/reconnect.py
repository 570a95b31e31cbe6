"""The ``reconnect`` scenario: does every asked question get exactly one answer across drops?

Each user asks, drops its connection mid-answer (users with an even number close with a
close frame, odd ones cut the TCP connection), reconnects with resume
(``?session_id=…&last_seq=…``, docs/protocol.md) and resends its unanswered ids, as every
qa-ws client does. An id is answered by an ``agent_response`` (or an ``error``) with that
``reply_to``; the same event delivered again (same ``seq``, from a replay and a resend) is
one answer, as a client that keeps ``last_seq`` sees it. Counted, for the whole run:

* ``asked``: ids sent; ``answered``: ids that got an answer;
* ``resumed``: reconnects whose ``connected`` said ``resumed: true``;
* ``lost``: ids without an answer within ``--answer-timeout`` after the reconnect;
* ``duplicated``: ids answered by more than one distinct event (two ``seq``s).

With several targets (``--serve --instances 2``) a user reconnects to the next instance.

Imports Locust (and so gevent's monkey-patching): load processes only.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from locust import task

from qa_ws_cli.bench.users import MAX_FRAMES_PER_WAIT, Lost, QaWsUser, _ms


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))


class ReconnectUser(QaWsUser):
    """Ask, drop mid-answer, resume, and check the answer arrives exactly once."""

    scenario = "reconnect"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        number = int(self.sub.rsplit("-", 1)[-1])
        self.cut = number % 2 == 1  # odd users cut the socket, even ones send a close frame
        self.targets = list(self.options.targets) or [self.host or ""]
        self.target = number % len(self.targets)
        self.session_id: str | None = None
        self.last_seq = 0
        self.answers: dict[str, set[int]] = {}  # id -> seqs of the events that answered it

    def on_start(self) -> None:
        self.open()

    def open(self, resume: bool = False) -> bool:
        url = self.targets[self.target % len(self.targets)]
        if resume and self.session_id:
            url = with_query(url, session_id=self.session_id, last_seq=str(self.last_seq))
        event = self.connect(url)
        if event is None:
            return False
        if resume:
            self.rec.count("resumed" if event.get("resumed") else "not_resumed")
        if not event.get("resumed"):
            self.last_seq = 0
        self.session_id = str(event.get("session_id") or "") or None
        return True

    def note(self, event: dict[str, Any]) -> str | None:
        """Track ``seq`` and answers; the id this event answers, or None."""
        seq = event.get("seq")
        if isinstance(seq, int):
            self.last_seq = max(self.last_seq, seq)
        rid = event.get("reply_to")
        if event.get("type") not in ("agent_response", "error") or rid not in self.answers:
            return None
        seqs = self.answers[str(rid)]
        key = seq if isinstance(seq, int) else -len(seqs) - 1  # no seq: always a new event
        if key not in seqs:
            seqs.add(key)
            if len(seqs) == 1:
                self.rec.count("answered")
            elif len(seqs) == 2:
                self.rec.count("duplicated")
        return str(rid)

    def read_until(self, mid: str, deadline: float, *, first_piece: bool) -> str:
        """Read until ``mid`` has a piece (``first_piece``) or an answer: "delta" or "answer"."""
        for _ in range(MAX_FRAMES_PER_WAIT):
            event = self.next_event(deadline)
            answered = self.note(event)
            if answered == mid:
                return "answer"
            if event.get("reply_to") == mid and event.get("type") == "agent_delta" and first_piece:
                return "delta"
            if answered is None and event.get("reply_to") is None:
                self.unrelated(event)
        raise Lost("too_many_frames", f"no answer among {MAX_FRAMES_PER_WAIT} frames")

    @task
    def ask_drop_resume(self) -> None:
        self.check_time()
        if self.ws is None and not self.open(resume=self.session_id is not None):
            return
        mid = self.next_id()
        started = time.perf_counter()
        deadline = started + self.options.answer_timeout_s
        self.answers[mid] = set()
        frame = {"type": "chat_message", "id": mid, "content": self.options.message}
        try:
            self.send(frame)
            self.rec.count("asked")
            state = self.read_until(mid, deadline, first_piece=True)
        except Lost as lost:
            self.rec.fail("chat", lost.code, _ms(started), lost.detail)
            self.drop()
            state = "dropped"
        if state != "answer":
            self.leave()
            self.target += 1
            state = self.come_back(mid, frame, deadline)
        if state == "answer":
            self.rec.ok("chat", _ms(started))
        elif state == "lost":
            self.rec.count("lost")
            self.rec.fail("chat", "lost", _ms(started), f"{mid} was never answered")

    def leave(self) -> None:
        if self.cut:
            self.drop()
        else:
            self.disconnect()

    def come_back(self, mid: str, frame: dict[str, Any], deadline: float) -> str:
        """Resume, read the replay, resend ``mid`` if the replay did not answer it."""
        if not self.open(resume=True):
            return "failed"  # the connect failure is recorded; nothing could be checked
        try:
            self.send(frame)  # a replayed answer and this resend's answer share one seq
            self.read_until(mid, deadline, first_piece=False)
        except Lost as lost:
            self.drop()
            if lost.code == "answer_timeout":
                return "lost"
            self.rec.fail("chat", lost.code, 0.0, lost.detail)
            return "failed"
        return "answer"
