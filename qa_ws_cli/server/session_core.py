"""The rules of one session, with no I/O: fed inputs, it hands back outputs.

Like python-websockets' ``protocol.py``, ``SessionCore`` never touches a socket, a task, a
timer or the store. The driver (``server/runs.py``) feeds it what happened (a client frame, an
agent's piece or outcome, an attach or detach, a clock tick, the store's answer to a claim) and
carries out what it returns:

- ``SendFrame``: a live frame for one connection (deltas, pongs, stored answers, errors that
  answer no chat);
- ``Publish``: a replayable event: the store gives it the session's next ``seq``, keeps it in
  the replay log (with the answer and the turn, when it is one), and it goes to whichever
  connection holds the session, on any instance;
- ``Claim``: ask the store, atomically across the cluster, whether this chat id was answered,
  is running somewhere, or is ours to run; the answer comes back through ``claimed``;
- ``StartRun`` / ``CancelRun`` / ``CancelRemote``: start or stop an agent run;
- ``CloseConnection``.

(Their types, and the store's answers to a claim, are in ``session_outputs.py``.)

A run belongs to the session, not to the connection that asked: a disconnect of any kind
never cancels it. Only ``cancel``, the deadline, or the session's expiry stop it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from qa_ws_cli.protocol.codec import encode, encode_fields
from qa_ws_cli.protocol.codes import CloseCode, ErrorCode
from qa_ws_cli.protocol.events import (
    AgentDelta,
    AgentResponse,
    ErrorEvent,
    SystemEvent,
)
from qa_ws_cli.server.session_outputs import (
    Answered,
    CancelRemote,
    CancelRun,
    Claim,
    Claimed,
    ClaimResult,
    CloseConnection,
    Output,
    Publish,
    RunningElsewhere,
    SendFrame,
    StartRun,
)

SAFE_MESSAGES = {
    ErrorCode.AGENT_TIMEOUT: "the agent did not answer in time",
    ErrorCode.AGENT_ERROR: "the agent failed to answer",
    ErrorCode.CANCELLED: "the answer was cancelled",
    ErrorCode.AGENT_INTERRUPTED: "the server running this answer stopped; send it again",
}
INTERRUPTED_RETRY_AFTER_S = 1.0
RESUMED_ELSEWHERE = "session resumed on another connection"


RATE_LIMITED_MESSAGE = "too many messages; slow down"


@dataclass(frozen=True, slots=True)
class CoreLimits:
    max_content_chars: int = 8000
    max_inflight_per_connection: int = 4
    timeout_s: float = 30.0


@dataclass(slots=True)
class Run:
    """One chat of this session handled on this instance: claiming, then running."""

    origin: str  # the connection that asked
    content: str
    started: float  # monotonic: latency is measured from here
    deadline: float | None = None  # set once claimed
    running: bool = False
    cancelled_by: str | None = None
    timed_out: bool = False
    attachments: tuple[str, ...] = ()


def with_seq(body: str, seq: int) -> str:
    """The frame of a replayable event: ``seq`` put first into its JSON object."""
    return f'{{"seq":{seq},{body[1:]}'


def error_body(
    code: str, message: str, reply_to: str | None, retry_after: float | None = None
) -> str:
    return encode(
        ErrorEvent(code=code, message=message, reply_to=reply_to, retry_after=retry_after)
    )


NO_RUNS: Mapping[str, Run] = MappingProxyType({})
NO_REMOTE: Mapping[str, None] = MappingProxyType({})


@dataclass(slots=True)
class SessionCore:
    session_id: str
    user: str
    limits: CoreLimits = field(default_factory=CoreLimits)
    attached: str | None = None
    # both shared and empty until the first write gives the session a dict of its own (64
    # bytes each, and nearly every session of an idle connection never needs one)
    runs: Mapping[str, Run] = field(default_factory=lambda: NO_RUNS)
    remote: Mapping[str, None] = field(default_factory=lambda: NO_REMOTE)  # run elsewhere

    # -- connections -------------------------------------------------------------------------

    def attach(self, conn: str) -> list[Output]:
        """``conn`` holds the session from now on; a connection that held it is closed."""
        previous, self.attached = self.attached, conn
        if previous is not None and previous != conn:
            return [CloseConnection(previous, CloseCode.NORMAL, RESUMED_ELSEWHERE)]
        return []

    def attached_elsewhere(self, conn: str) -> list[Output]:
        """``conn``, on another instance, resumed the session: the connection here that
        held it is closed, and what is published from now on goes to that instance."""
        previous = self.attached
        if previous is None or previous == conn:
            return []
        self.attached = None
        return [CloseConnection(previous, CloseCode.NORMAL, RESUMED_ELSEWHERE)]

    def detach(self, conn: str) -> None:
        """The connection went (any close code): its runs carry on into the session."""
        if self.attached == conn:
            self.attached = None

    def running_elsewhere(self, chat_ids: Iterable[str]) -> None:
        """Chats of this session that another instance runs (its answer will come to us)."""
        remote = self.remote if isinstance(self.remote, dict) else {}
        remote.update(dict.fromkeys(c for c in chat_ids if c not in self.runs))
        self.remote = remote

    def _take(self, chat_id: str) -> Run | None:
        runs = self.runs
        return runs.pop(chat_id, None) if isinstance(runs, dict) else None

    def _forget_remote(self, chat_id: str) -> None:
        if isinstance(self.remote, dict):
            self.remote.pop(chat_id, None)

    def inflight(self, conn: str | None = None) -> int:
        if conn is None or not self.runs:  # no runs: the common case of every chat
            return len(self.runs)
        return sum(1 for run in self.runs.values() if run.origin == conn)

    # -- client frames -------------------------------------------------------------------------

    def chat(
        self,
        conn: str,
        chat_id: str,
        content: str,
        *,
        draining: bool,
        attachments: tuple[str, ...] = (),
    ) -> list[Output]:
        """A ``chat_message``. Its rate limit is counted by the caller before any answer that
        is not a claim, and by the store in the claim itself (``RateLimited``)."""
        limits = self.limits
        if len(content) > limits.max_content_chars:
            return self.error(
                conn,
                ErrorCode.MESSAGE_TOO_LARGE,
                f"content is longer than {limits.max_content_chars} characters",
                chat_id,
            )
        if chat_id in self.runs:
            return []  # in flight here: its answer reaches this session anyway
        if draining:
            return self.error(
                conn,
                ErrorCode.AGENT_BUSY,
                "the server is restarting; resend after reconnecting",
                chat_id,
                retry_after=1.0,
            )
        if self.inflight(conn) >= limits.max_inflight_per_connection:
            return self.error(
                conn,
                ErrorCode.AGENT_BUSY,
                f"at most {limits.max_inflight_per_connection} answers in flight per connection",
                chat_id,
                retry_after=1.0,
            )
        if chat_id in self.remote:  # run elsewhere: the store says if it still is, or answered
            self._forget_remote(chat_id)
        runs = self.runs if isinstance(self.runs, dict) else {}
        runs[chat_id] = Run(conn, content, 0.0, attachments=attachments)
        self.runs = runs
        return [Claim(chat_id)]

    def claimed(self, chat_id: str, result: ClaimResult, now: float) -> list[Output]:
        """The store's answer to ``Claim``."""
        run = self.runs.get(chat_id)
        if run is None:  # the session expired meanwhile
            return []
        if isinstance(result, Claimed):  # every chat's case, tested first
            if run.cancelled_by is not None:  # cancelled while the claim was on its way
                self._take(chat_id)
                return [self._publish_error(chat_id, ErrorCode.CANCELLED)]
            run.running = True
            run.started = now
            run.deadline = now + self.limits.timeout_s
            return [StartRun(chat_id, run.content, result.history, run.origin, run.attachments)]
        self._take(chat_id)
        if isinstance(result, Answered):  # answered before: the same answer, no second run
            return [SendFrame(run.origin, result.frame)]
        if isinstance(result, RunningElsewhere):
            self.running_elsewhere((chat_id,))
            return []
        code, wait = ErrorCode.RATE_LIMITED, result.retry_after
        return self.error(run.origin, code, RATE_LIMITED_MESSAGE, chat_id, wait)

    def cancel(self, conn: str, cancel_id: str, target: str) -> list[Output]:
        run = self.runs.get(target)
        if run is not None:
            if run.cancelled_by is None and not run.timed_out:
                run.cancelled_by = cancel_id
                return [CancelRun(target)] if run.running else []
            return []
        if target in self.remote:
            return [CancelRemote(target, cancel_id, conn)]
        return self._not_in_flight(conn, cancel_id, target)

    def cancel_ended(self, conn: str, cancel_id: str, target: str, lapsed: bool) -> list[Output]:
        """The store found that the remote target of ``cancel`` runs nowhere any more (its
        claim released, or lapsed: its instance died)."""
        self._forget_remote(target)
        ended = self.interrupted([target]) if lapsed else []
        return ended + self._not_in_flight(conn, cancel_id, target)

    def _not_in_flight(self, conn: str, cancel_id: str, target: str) -> list[Output]:
        message = f"no answer to {target!r} is in flight"
        return self.error(conn, ErrorCode.NOT_IN_FLIGHT, message, cancel_id)

    def cancel_from_cluster(self, target: str, cancel_id: str) -> list[Output]:
        """Another instance relays its client's ``cancel`` for a run of ours."""
        run = self.runs.get(target)
        if run is None or run.cancelled_by is not None or run.timed_out:
            return []
        run.cancelled_by = cancel_id
        return [CancelRun(target)] if run.running else []

    # -- the agent -------------------------------------------------------------------------------

    def piece(self, chat_id: str, text: str) -> SendFrame | None:
        """A piece of the answer, live to the attached connection (deltas are not kept)."""
        if not text or self.attached is None or chat_id not in self.runs:
            return None
        return SendFrame(self.attached, encode_fields(AgentDelta, reply_to=chat_id, delta=text))

    def live(self, chat_id: str, frame: str) -> list[Output]:
        """A non-replayable frame about a run (an ``agent_event``) for the attached connection."""
        if self.attached is None or chat_id not in self.runs:
            return []
        return [SendFrame(self.attached, frame)]

    def finished(
        self,
        chat_id: str,
        content: str,
        now: float,
        latency_ms: float | None = None,
        **extra: Any,
    ) -> list[Output]:
        """The agent's whole answer; ``extra`` carries optional ``agent_response`` fields.
        ``latency_ms``: the caller's ``latency_ms(chat_id, now)``, not computed twice."""
        run = self._take(chat_id)
        if run is None:
            return []
        if not content:
            return [self._publish_error(chat_id, ErrorCode.AGENT_ERROR)]
        if latency_ms is None:
            latency_ms = round((now - run.started) * 1000, 1)
        fields = {"reply_to": chat_id, "content": content, "latency_ms": latency_ms}
        if extra or type(content) is not str:  # tools, files; or not text, which the model refuses
            body = encode(AgentResponse(**fields, **extra))
        else:
            body = encode_fields(AgentResponse, **fields)
        return [
            Publish(body, chat_id, answer=True, turn=(run.content, content), release=True),
        ]

    def failed(self, chat_id: str, code: str, message: str | None = None) -> list[Output]:
        """The agent failed; ``message`` is only ever a protocol code's own safe text."""
        if self._take(chat_id) is None:
            return []
        return [self._publish_error(chat_id, code, message)]

    def stopped(self, chat_id: str) -> list[Output]:
        """The run's task ended without an outcome (we cancelled it): say why, if we know."""
        run = self._take(chat_id)
        if run is None:
            return []
        if run.timed_out:
            return [self._publish_error(chat_id, ErrorCode.AGENT_TIMEOUT)]
        if run.cancelled_by is not None:
            return [self._publish_error(chat_id, ErrorCode.CANCELLED)]
        return []  # stopped by a shutdown: its claim lapses, and a resume elsewhere says so

    def latency_ms(self, chat_id: str, now: float) -> float | None:
        run = self.runs.get(chat_id)
        return None if run is None else round((now - run.started) * 1000, 1)

    # -- time ------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Output]:
        """Runs past their deadline are stopped (``stopped`` then says ``agent_timeout``)."""
        out: list[Output] = []
        for chat_id, run in self.runs.items():
            due = run.deadline is not None and now >= run.deadline
            if due and run.running and not run.timed_out:
                run.timed_out = True
                out.append(CancelRun(chat_id))
        return out

    def next_deadline(self) -> float | None:
        deadlines = [
            r.deadline for r in self.runs.values() if r.deadline is not None and not r.timed_out
        ]
        return min(deadlines) if deadlines else None

    # -- the cluster -----------------------------------------------------------------------------

    def settled_elsewhere(self, chat_ids: Iterable[str]) -> None:
        """Runs of another instance whose claim was released: their final frame is kept
        (the caller sends what this session's connection missed of it)."""
        for chat_id in chat_ids:
            self._forget_remote(chat_id)

    def remote_frame(self, frame: str, reply_to: str | None) -> list[Output]:
        """A replayable frame another instance published into this session."""
        if reply_to is not None:
            self._forget_remote(reply_to)
        return [SendFrame(self.attached, frame)] if self.attached is not None else []

    def interrupted(self, chat_ids: list[str]) -> list[Output]:
        """Runs whose instance died (their lease lapsed): the client may send them again."""
        out: list[Output] = []
        for chat_id in chat_ids:
            self._forget_remote(chat_id)
            if chat_id in self.runs:
                continue
            body = error_body(
                ErrorCode.AGENT_INTERRUPTED,
                SAFE_MESSAGES[ErrorCode.AGENT_INTERRUPTED],
                chat_id,
                INTERRUPTED_RETRY_AFTER_S,
            )
            out.append(
                Publish(
                    body,
                    chat_id,
                    release=True,
                    only_if_claimed=True,
                    error=ErrorCode.AGENT_INTERRUPTED,
                )
            )
        return out

    # -- notices ---------------------------------------------------------------------------------

    def system(self, conn: str | None, **fields: Any) -> list[Output]:
        """A replayable ``system_event`` for the session, sent if ``conn`` (or, with None,
        any connection) holds it."""
        if self.attached is None or (conn is not None and self.attached != conn):
            return []
        return [Publish(encode(SystemEvent(**fields)))]

    # -- errors ----------------------------------------------------------------------------------

    def error(
        self,
        conn: str,
        code: str,
        message: str,
        reply_to: str | None = None,
        retry_after: float | None = None,
    ) -> list[Output]:
        """An error for ``conn``: replayable (with ``seq``) when it answers a chat of the
        attached connection, else live. A frame that reuses the id of a chat in flight or
        answered already (bad, oversize, over the rate limit) is answered live and without
        ``reply_to``: that chat has one final frame, sent or still to come. Only the store
        knows the answered ids, so that case is the ``instead`` of the ``Publish``."""
        anonymous = SendFrame(conn, error_body(code, message, None, retry_after), error=code)
        in_flight = reply_to in self.runs or reply_to in self.remote
        if reply_to is None or in_flight or self.attached != conn:
            return [anonymous]
        body = error_body(code, message, reply_to, retry_after)
        return [Publish(body, reply_to, error=code, instead=SendFrame(conn, anonymous.frame))]

    def _publish_error(self, chat_id: str, code: str, message: str | None = None) -> Publish:
        text = message or SAFE_MESSAGES.get(ErrorCode(code), "the agent failed to answer")
        return Publish(error_body(code, text, chat_id), chat_id, release=True, error=code)
