"""An agent for cluster tests, loaded by real ``qa-ws serve`` processes as
``python:tests.cluster_agent:agent`` (with the repository on PYTHONPATH).

A message ``sleep=N rest`` takes N seconds to answer (3 pieces, the first at once), others
0.2 s. An instance started with ``QA_TEST_NO_SLEEP=1`` answers every message in 0.2 s: so the
same message may hang on one instance and be answered at once on the other.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any


class Sleeper:
    async def stream(self, message: str, context: Any = None) -> AsyncIterator[str]:
        seconds = 0.2
        if message.startswith("sleep=") and os.environ.get("QA_TEST_NO_SLEEP") != "1":
            seconds = float(message.split()[0].removeprefix("sleep="))
        yield "answer "
        await asyncio.sleep(seconds / 2)
        yield "to: "
        await asyncio.sleep(seconds / 2)
        yield message


agent = Sleeper()
