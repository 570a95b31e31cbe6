"""What the HTTP backends (Agno AgentOS, OpenAI-compatible) share: one pooled client session,
the answer deadline, retries that stop at the first byte, and safe error messages.

A backend subclasses ``SSEHTTPAgent`` and reads ``self._events(url, ...)``: the server-sent
events of one answer, with every transport failure already mapped to ``AgentError`` or
``AgentTimeout``. Messages never carry URLs, keys or upstream bodies; those go to the
``qa_ws.agents`` log (with the key redacted) for the operator.

The deadline is checked around each await rather than with one ``asyncio.timeout`` spanning
the generator: a timeout scope must not stay open across a ``yield``, or it would cancel the
consumer while it is busy elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, NoReturn

import aiohttp
from yarl import URL

from qa_ws_cli.agents.base import Agent
from qa_ws_cli.agents.sse import SSEError, SSEEvent, SSEParser
from qa_ws_cli.config import AgentSettings
from qa_ws_cli.errors import AgentBusy, AgentError, AgentTimeout, ConfigError

log = logging.getLogger("qa_ws.agents")

SPEC_PATH = "websocket.agent.spec"
RETRY_STATUSES = frozenset({502, 503, 504})
BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0
CHECK_TIMEOUT_S = 2.0
LOGGED_BODY_CHARS = 300


def parse_http_url(target: str, *, example: str) -> URL:
    """Validate the URL part of a spec; mistakes are configuration errors, named as such."""
    try:
        url = URL(target)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid agent URL, expected {example}", path=SPEC_PATH) from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"invalid agent URL, expected {example}", path=SPEC_PATH)
    return url.with_query(None).with_fragment(None)


def safe_url(url: URL) -> str:
    """The URL for log lines: no user info, no query."""
    return str(url.with_user(None).with_query(None).with_fragment(None))


def describe(exc: BaseException) -> str:
    """An exception for the log: its ``str`` (aiohttp's ``repr`` spells out proxy auth)."""
    return f"{type(exc).__name__}: {exc}"


class SSEHTTPAgent(Agent):
    """Base of the HTTP backends; subclasses build the request and read the events."""

    def __init__(self, *, settings: AgentSettings, api_key: str | None, check_url: URL) -> None:
        self.timeout_s = settings.timeout_s
        self.connect_timeout_s = settings.connect_timeout_s
        self.retries = settings.retries
        self.backoff_s = BACKOFF_S
        self.check_timeout_s = min(CHECK_TIMEOUT_S, settings.timeout_s)
        self._pool_size = settings.max_concurrency + 1  # +1: a readiness check never waits
        self._api_key = api_key
        self._check_url = check_url
        self._session: aiohttp.ClientSession | None = None
        self._ready: bool | None = None

    def _client(self) -> aiohttp.ClientSession:
        """The pooled session, made on first use so it binds to the running loop."""
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s),
            )
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    async def check(self) -> bool:
        detail = ""
        try:
            async with (
                asyncio.timeout(self.check_timeout_s),
                self._client().get(self._check_url) as response,
            ):
                ready = response.status < 400
                detail = f"HTTP {response.status}"
        except Exception as exc:  # a readiness probe reports, it never raises
            ready, detail = False, type(exc).__name__
        if ready != self._ready:
            state = "ready" if ready else "not ready"
            log.log(
                logging.INFO if ready else logging.WARNING,
                "%s backend %s: %s",
                self.name,
                state,
                detail,
            )
            self._ready = ready
        return ready

    async def _events(
        self,
        url: URL,
        *,
        headers: Mapping[str, str] | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        **request: Any,
    ) -> AsyncGenerator[SSEEvent, None]:
        """The events of one answer, until the upstream ends its response.

        ``form`` builds a multipart body; it is called again for each retry, since a body
        that was sent cannot be sent a second time.
        """
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        response = await self._connect(url, deadline, {"headers": headers, **request}, form)
        async with response:
            if response.status >= 300:
                await self._fail(response, deadline)
            parser = SSEParser()
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await response.content.readany()
                except TimeoutError as exc:
                    log.warning("%s: no complete answer within %ss", self.name, self.timeout_s)
                    raise AgentTimeout() from exc
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                    log.warning("%s: connection lost mid-answer: %s", self.name, describe(exc))
                    raise AgentError("the connection to the agent was lost mid-answer") from exc
                if not chunk:
                    return
                try:
                    events = parser.feed(chunk)
                except SSEError as exc:
                    log.warning("%s: %s", self.name, exc)
                    raise AgentError("the agent sent a malformed answer") from exc
                for event in events:
                    yield event

    async def _connect(
        self,
        url: URL,
        deadline: float,
        request: dict[str, Any],
        form: Callable[[], aiohttp.FormData] | None = None,
    ) -> aiohttp.ClientResponse:
        """POST, retrying refused or reset connections and 502/503/504 until headers arrive."""
        loop = asyncio.get_running_loop()
        session = self._client()
        attempt = 0
        while True:
            failure: str
            try:
                if form is not None:
                    request["data"] = form()
                async with asyncio.timeout_at(deadline):
                    response = await session.post(url, **request)
            except aiohttp.ClientConnectionError as exc:
                if attempt >= self.retries:
                    log.warning("%s: cannot reach %s: %s", self.name, safe_url(url), describe(exc))
                    if isinstance(exc, TimeoutError):
                        raise AgentTimeout() from exc
                    raise AgentError("the agent backend is unreachable") from exc
                failure = describe(exc)
            except TimeoutError as exc:
                log.warning("%s: no answer within %ss", self.name, self.timeout_s)
                raise AgentTimeout() from exc
            else:
                if response.status not in RETRY_STATUSES or attempt >= self.retries:
                    return response
                failure = f"HTTP {response.status}"
                response.release()
            attempt += 1
            delay = min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
            log.warning(
                "%s: %s before the answer began; retry %d/%d in %.2fs",
                self.name,
                failure,
                attempt,
                self.retries,
                delay,
            )
            if loop.time() + delay >= deadline:
                raise AgentTimeout()
            await asyncio.sleep(delay)

    async def _fail(self, response: aiohttp.ClientResponse, deadline: float) -> NoReturn:
        """Map an HTTP error to a safe exception; the body goes to the log only."""
        status = response.status
        try:
            async with asyncio.timeout_at(deadline):
                raw = await response.content.read(4 * LOGGED_BODY_CHARS)
            body = raw.decode("utf-8", "replace")
        except (TimeoutError, aiohttp.ClientError):
            body = ""
        log.warning(
            "%s: HTTP %d from %s: %s",
            self.name,
            status,
            safe_url(response.url),
            self._redact(body[:LOGGED_BODY_CHARS]),
        )
        if status in (401, 403):
            raise AgentError("the agent backend refused the gateway's credentials")
        if status == 429:
            raise AgentBusy()
        if status in RETRY_STATUSES:
            raise AgentError(f"the agent backend is unavailable (HTTP {status})")
        raise AgentError(f"the agent backend failed (HTTP {status})")

    def _cut_off(self, terminator: str) -> AgentError:
        log.warning("%s: the event stream ended without %s", self.name, terminator)
        return AgentError("the agent's answer ended before it was complete")

    def _malformed(self, detail: str) -> AgentError:
        log.warning("%s: malformed event: %s", self.name, self._redact(detail[:LOGGED_BODY_CHARS]))
        return AgentError("the agent sent a malformed answer")


def no_answer() -> AgentError:
    """The one error for an answer that finished with no text, whichever backend."""
    return AgentError("the agent returned an empty answer")
