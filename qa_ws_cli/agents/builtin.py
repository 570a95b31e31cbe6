"""Built-in agents: ``demo`` (an offline QA helper that streams) and ``echo`` (for benchmarks)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from qa_ws_cli.agents.base import Agent, ChatContext

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


def demo_answer(message: str) -> str:
    text = message.lower()
    for keys, answer in _TOPICS:
        if any(k in text for k in keys):
            return answer
    return _DEFAULT


class DemoAgent(Agent):
    """Deterministic and offline; spreads ``latency_ms`` over several deltas like a model."""

    name = "demo"

    def __init__(self, latency_ms: float = 200.0, chunks: int = 5) -> None:
        self.latency_s = latency_ms / 1000.0
        self.chunks = max(1, chunks)

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        words = _WORDS.findall(demo_answer(message))
        size = -(-len(words) // self.chunks)
        pause = self.latency_s / self.chunks
        for start in range(0, len(words), size):
            if pause:
                await asyncio.sleep(pause)
            yield "".join(words[start : start + size])


class EchoAgent(Agent):
    """Answers with the question at once: the gateway's own cost, for benchmarks."""

    name = "echo"

    def answer_at_once(self, message: str, context: ChatContext) -> str:
        return message

    async def chat(self, message: str, context: ChatContext | None = None) -> str:
        return message
