"""What ``SessionCore`` hands its driver, and the store's answers to its claims: plain values.

``session_core.py`` says what each output asks of the driver; the stores
(``session_store.py``, ``redis_sessions.py``) answer a ``Claim`` with a ``ClaimResult``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# -- outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendFrame:
    conn: str
    frame: str
    error: str | None = None  # the error code, when the frame is an ``error`` (for metrics)


@dataclass(frozen=True, slots=True)
class Publish:
    """A replayable event; ``body`` is its JSON without ``seq`` (the store adds it)."""

    body: str
    reply_to: str | None = None
    answer: bool = False  # remember ``body`` (with its seq) as the answer to ``reply_to``
    turn: tuple[str, str] | None = None  # (question, answer) for the session's history
    release: bool = False  # the run of ``reply_to`` is over: give its claim back
    only_if_claimed: bool = False  # publish only while ``reply_to`` is still claimed
    error: str | None = None  # the error code, when the event is an ``error`` (for metrics)
    # not kept when ``reply_to`` was answered already (a bad resend): this goes out instead
    instead: SendFrame | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    chat_id: str


@dataclass(frozen=True, slots=True)
class StartRun:
    chat_id: str
    content: str
    history: Sequence[tuple[str, str]]  # (question, answer) pairs, oldest first
    origin: str  # the connection that asked (for logs)
    attachments: tuple[str, ...] = ()  # file ids, resolved by the driver


@dataclass(frozen=True, slots=True)
class CancelRun:
    chat_id: str


@dataclass(frozen=True, slots=True)
class CancelRemote:
    """The run is on another instance: ask the cluster to stop it (unless the store says it
    runs nowhere any more: then ``cancel_ended``)."""

    chat_id: str
    cancel_id: str
    conn: str  # who asked


@dataclass(frozen=True, slots=True)
class CloseConnection:
    conn: str
    code: int
    reason: str


Output = SendFrame | Publish | Claim | StartRun | CancelRun | CancelRemote | CloseConnection


# -- the store's answer to a claim -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answered:
    frame: str


@dataclass(frozen=True, slots=True)
class RunningElsewhere:
    instance: str


@dataclass(frozen=True, slots=True)
class Claimed:
    history: Sequence[tuple[str, str]] = ()  # a store may parse its turns on first read


@dataclass(frozen=True, slots=True)
class RateLimited:
    """A counted claim (the store counts the chat against its user's rate limit in the same
    step) found the user over the limit: nothing was claimed."""

    retry_after: float


ClaimResult = Answered | RunningElsewhere | Claimed | RateLimited
