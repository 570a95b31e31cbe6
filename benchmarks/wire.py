"""What the load generator sends and how every server under test reads it.

A chat whose content is ``stream N P`` asks for N ``agent_delta`` frames, P milliseconds apart
(0: as fast as the server writes), then the ``agent_response``; any other content is answered
with one ``agent_response``. Each streamed piece starts with ``time.monotonic_ns()`` taken where
the piece is made (the agent), so the client can measure the relay's added latency: on Linux
CLOCK_MONOTONIC is one clock for every process on the machine.
"""

from __future__ import annotations

import time

CHAT_CONTENT = "how do I test a login form?"
PIECE_TEXT = " token"  # what follows the timestamp in a piece: a model-sized token


def stream_request(count: int, pause_ms: float) -> str:
    return f"stream {count} {pause_ms:g}"


def parse_stream_request(content: str) -> tuple[int, float] | None:
    """``(count, pause_s)`` for a ``stream N P`` content, else None (answer once)."""
    if not content.startswith("stream "):
        return None
    parts = content.split()
    if len(parts) != 3:
        return None
    try:
        count, pause_ms = int(parts[1]), float(parts[2])
    except ValueError:
        return None
    return max(0, min(count, 10_000)), max(0.0, min(pause_ms, 1000.0)) / 1000.0


def piece() -> str:
    """One streamed piece, stamped now."""
    return f"{time.monotonic_ns()}{PIECE_TEXT}"
