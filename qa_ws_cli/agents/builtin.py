"""Built-in agents: ``demo`` (an offline QA helper that streams and uses two tools) and
``echo`` (for benchmarks)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.agents.demo_files import describe
from qa_ws_cli.agents.events import Piece, ToolFinished, ToolStarted

_TOPICS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("login", "sign in", "password", "auth"),
        "To test a login form, cover: valid credentials land on the right page; a wrong "
        "password and an unknown user give the same message; empty fields are refused; the "
        "password field masks input; lockout or throttling after repeated failures; the session "
        "cookie is HttpOnly and Secure; and the form works with keyboard only and a screen reader.",
    ),
    (
        ("api", "endpoint", "rest", "http"),
        "For an API, test each endpoint's contract (status codes, schema, headers), error "
        "paths (bad input gives 4xx with a clear body, never a 500), authentication and "
        "authorization per role, idempotency of retries, pagination edges, and rate limits. "
        "Keep contract tests close to the spec so drift is caught in CI.",
    ),
    (
        ("load", "performance", "latency", "stress", "bench"),
        "For performance, state the target first (for example p95 under 500 ms at 150 "
        "users), measure from raw samples, ramp users gradually, watch the load generator's "
        "own CPU, and gate CI on the percentiles rather than on averages.",
    ),
    (
        ("flaky", "flake", "intermittent"),
        "To tame a flaky test, make it fail on demand: run it in a loop, record seeds and "
        "timings, replace sleeps with waits on conditions, isolate shared state, and quarantine "
        "it with an owner and a date instead of retrying it silently.",
    ),
    (
        ("regression", "release", "smoke"),
        "Before a release, run a smoke suite over the critical paths first, then the "
        "regression suite ranked by risk and recent change, and compare against the last "
        "release's results so a new failure stands out.",
    ),
)
_DEFAULT = (
    "A good test plan starts from risk: list what users do most and what would hurt most if "
    "it broke, write one clear check per behaviour, automate the stable ones, and keep "
    "exploratory sessions for the rest. Ask me about login forms, APIs, performance, flaky "
    "tests or releases for specifics."
)
_WORDS = re.compile(r"\S+\s*")


def demo_topic(message: str) -> tuple[str, str] | None:
    """The feature a question is about (the topic's first keyword) and its plan, if any."""
    text = message.lower()
    for keys, answer in _TOPICS:
        if any(k in text for k in keys):
            return keys[0], answer
    return None


def demo_answer(message: str) -> str:
    topic = demo_topic(message)
    return _DEFAULT if topic is None else topic[1]


class DemoAgent(Agent):
    """Deterministic and offline, with tools as a real QA agent has them: each attached file
    is read (``read_attachment``: a JUnit report's failures, a log's error lines), a question
    about a known topic looks up its test plan (``lookup_test_plan``), then the answer streams.
    ``latency_ms`` is spread over the tool calls and the answer's deltas, like a model's."""

    name = "demo"

    def __init__(self, latency_ms: float = 200.0, chunks: int = 5) -> None:
        self.latency_s = latency_ms / 1000.0
        self.chunks = max(1, chunks)

    async def events(self, message: str, context: ChatContext) -> AsyncIterator[Piece]:
        topic = demo_topic(message)
        steps = self.chunks + len(context.attachments) + (topic is not None)
        pause = self.latency_s / steps
        notes: list[str] = []
        for index, attachment in enumerate(context.attachments):
            call, started = f"{context.message_id}:file{index}", time.perf_counter()
            yield ToolStarted(call, "read_attachment", {"name": attachment.name})
            note = await asyncio.to_thread(describe, attachment)
            await self._pause(pause, started)
            yield ToolFinished(call, "read_attachment", note, _ms_since(started))
            notes.append(note)
        plan = _DEFAULT
        if topic is not None:
            (feature, plan), call = topic, f"{context.message_id}:plan"
            started = time.perf_counter()
            yield ToolStarted(call, "lookup_test_plan", {"feature": feature})
            await self._pause(pause, started)
            yield ToolFinished(call, "lookup_test_plan", plan, _ms_since(started))
        words = _WORDS.findall(" ".join([*notes, plan]))
        size = -(-len(words) // self.chunks)
        for start in range(0, len(words), size):
            if pause:
                await asyncio.sleep(pause)
            yield "".join(words[start : start + size])

    @staticmethod
    async def _pause(pause: float, started: float) -> None:
        """What is left of one step's share of the latency after the tool's own work."""
        left = pause - (time.perf_counter() - started)
        if left > 0:
            await asyncio.sleep(left)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class EchoAgent(Agent):
    """Answers with the question at once: the gateway's own cost, for benchmarks."""

    name = "echo"

    def answer_at_once(self, message: str, context: ChatContext) -> str:
        return message

    async def chat(self, message: str, context: ChatContext | None = None) -> str:
        return message
