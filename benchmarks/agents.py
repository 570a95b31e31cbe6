"""The streaming agent qa-ws loads for the relay benchmark.

    qa-ws serve --agent python:benchmarks.agents:stream_agent

It is a qa-ws ``Agent`` subclass, so the gateway calls it as it is (no adapter in between), and
yields pieces stamped where they are made (see ``benchmarks.wire``). Content that is not a
``stream N P`` request is echoed, as the echo agent does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from benchmarks.wire import parse_stream_request, piece
from qa_ws_cli.agents.base import Agent, ChatContext


class StreamAgent(Agent):
    name = "bench-stream"

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        request = parse_stream_request(message)
        if request is None:
            yield message
            return
        count, pause_s = request
        for _ in range(count):
            if pause_s:
                await asyncio.sleep(pause_s)
            yield piece()


stream_agent = StreamAgent()
