"""``python:package.module:attr``: an agent imported into the gateway's own process.

The plan's interface is one coroutine, ``async def chat(self, message: str) -> str``. An object
may stream instead: an ``async def stream(message, context)`` generator, or a ``chat`` that
returns an async iterator; either may take the ``ChatContext`` as its second argument (its
``attachments`` hold the user's files), and may yield the typed events of
``qa_ws_cli.agents`` (``ToolStarted``, ``ToolFinished``, ``Reasoning``, ...) between text
pieces. An async ``cancel(context)`` on the object is called when the user cancels. The
attribute may also be a class or a zero-argument factory that builds such an object; a sync one
runs now, so mistakes surface at startup, an async one on first use, inside the running loop.
A qa-ws ``Agent`` (instance, subclass or factory result) is used as it is.

Each await of the object's code is bounded by ``agent.timeout_s``; its exceptions become a
plain ``AgentError`` (details in the log), except the ``AgentError`` family, which passes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import import_module
from typing import Any, cast

from qa_ws_cli.agents.base import Agent, ChatContext, text_pieces
from qa_ws_cli.agents.events import RUN_EVENT_TYPES, Attachment, Piece, RunEvent
from qa_ws_cli.agents.http import CHECK_TIMEOUT_S, SPEC_PATH, no_answer
from qa_ws_cli.config import AgentSettings
from qa_ws_cli.errors import AgentError, AgentTimeout, ConfigError

log = logging.getLogger("qa_ws.agents")

EXAMPLE = "python:package.module:attr"
_END = object()  # marks the end of an answer's pieces


def _method(target: object) -> Callable[..., Any] | None:
    """The method to ask: ``stream`` when it has one, else ``chat``."""
    for name in ("stream", "chat"):
        method: object = getattr(target, name, None)
        if callable(method):
            return method
    return None


def _takes_context(method: Callable[..., Any]) -> bool:
    try:
        inspect.signature(method).bind("message", "context")
    except (TypeError, ValueError):  # ValueError: no signature to read; assume the plan's form
        return False
    return True


class PythonAgent(Agent):
    """Adapts an object with ``chat`` or ``stream`` to the gateway's ``Agent``."""

    name = "python"

    def __init__(
        self,
        target: object = None,
        *,
        build: Callable[[], Awaitable[object]] | None = None,
        label: str = "python agent",
        timeout_s: float = 30.0,
    ) -> None:
        if (target is None) == (build is None):
            raise ValueError("give the agent object or an async build function, not both")
        self.label = label
        self.timeout_s = timeout_s
        self._build = build
        self._target: object = target
        self._lock = asyncio.Lock()

    async def _agent(self) -> object:
        """The object, built once by the async factory the first time it is needed."""
        if self._build is None:
            return self._target
        async with self._lock:
            build = self._build
            if build is None:  # built by a caller that held the lock before this one
                return self._target
            try:
                async with asyncio.timeout(self.timeout_s):
                    built = await build()
            except TimeoutError as exc:
                log.warning("%s: building it took over %ss", self.label, self.timeout_s)
                raise AgentTimeout() from exc
            except Exception as exc:
                log.warning("%s: building it failed", self.label, exc_info=True)
                raise AgentError("the agent could not be started") from exc
            if not isinstance(built, Agent) and _method(built) is None:
                log.warning("%s: %r has no chat or stream method", self.label, built)
                raise AgentError("the agent could not be started")
            self._target, self._build = built, None
            return built

    def answer_at_once(self, message: str, context: ChatContext) -> str | None:
        """A qa-ws ``Agent`` that an async factory built answers at once as it would alone; an
        object's own method is called by ``events``, under the timeout."""
        target = self._target
        if self._build is None and isinstance(target, Agent):
            return target.answer_at_once(message, context)
        return None

    def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        return text_pieces(self.events(message, context))

    async def events(self, message: str, context: ChatContext) -> AsyncIterator[Piece]:
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        answered = False
        try:
            target = await self._agent()
            if isinstance(target, Agent):
                result: object = target.events(message, context)
            else:
                method = _method(target)
                assert method is not None  # checked when the target was accepted
                args = (message, context) if _takes_context(method) else (message,)
                result = method(*args)
                if inspect.isawaitable(result):
                    async with asyncio.timeout_at(deadline):
                        result = await result
            if isinstance(result, str):
                if not result:
                    raise no_answer()
                answered = True
                yield result
                return
            if not hasattr(result, "__aiter__"):
                log.warning("%s answered with a %s", self.label, type(result).__name__)
                raise AgentError("the agent answered without text")
            pieces = aiter(result)
            try:
                while True:
                    async with asyncio.timeout_at(deadline):
                        piece = await anext(pieces, _END)
                    if piece is _END:
                        break
                    if isinstance(piece, RUN_EVENT_TYPES):
                        answered = answered or isinstance(piece, Attachment)
                        yield cast(RunEvent, piece)
                        continue
                    if not isinstance(piece, str):
                        log.warning("%s yielded a %s", self.label, type(piece).__name__)
                        raise AgentError("the agent answered without text")
                    if piece:
                        answered = True
                        yield piece
            finally:
                aclose = getattr(pieces, "aclose", None)
                if aclose is not None:
                    await aclose()
        except AgentError:
            raise
        except TimeoutError as exc:
            log.warning("%s: no complete answer within %ss", self.label, self.timeout_s)
            raise AgentTimeout() from exc
        except Exception as exc:
            log.warning("%s failed", self.label, exc_info=True)
            raise AgentError() from exc
        if not answered:
            raise no_answer()

    async def cancel(self, context: ChatContext) -> bool:
        """The object's own ``cancel(context)``, when it has one (else nothing to stop)."""
        try:
            target = await self._agent()
            hook = getattr(target, "cancel", None)
            if not callable(hook):
                return False
            done = hook(context)
            if inspect.isawaitable(done):
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    done = await done
            return bool(done)
        except Exception:  # asking to stop must not fail the answer's ending
            log.warning("%s: cancel failed", self.label, exc_info=True)
            return False

    async def check(self) -> bool:
        try:
            target = await self._agent()
            probe = getattr(target, "check", None)
            if not callable(probe):
                return True
            ready = probe()
            if inspect.isawaitable(ready):
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    ready = await ready
            return bool(ready)
        except Exception:  # a readiness probe reports, it never raises
            log.warning("%s: readiness check failed", self.label, exc_info=True)
            return False

    async def aclose(self) -> None:
        if self._build is not None:
            return  # never built: nothing to release
        for name in ("aclose", "close"):
            closer = getattr(self._target, name, None)
            if callable(closer):
                try:
                    done = closer()
                    if inspect.isawaitable(done):
                        await done
                except Exception:
                    log.warning("%s: closing it failed", self.label, exc_info=True)
                return


def _import(target: str) -> object:
    module_name, colon, attr = target.partition(":")
    if not colon or not module_name or not attr:
        raise ConfigError(f"invalid python agent {target!r}, expected {EXAMPLE}", path=SPEC_PATH)
    try:
        found: object = import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"cannot import {module_name!r} for the agent: {exc!r}", path=SPEC_PATH
        ) from exc
    for name in attr.split("."):
        try:
            found = getattr(found, name)
        except AttributeError as exc:
            raise ConfigError(f"{module_name!r} has no attribute {attr!r}", path=SPEC_PATH) from exc
    return found


def _check_no_arguments(factory: Callable[..., object], target: str) -> None:
    try:
        inspect.signature(factory).bind()
    except TypeError as exc:
        raise ConfigError(
            f"{target!r} must take no arguments to build the agent", path=SPEC_PATH
        ) from exc
    except ValueError:
        pass  # no signature to inspect: calling it will tell


def _call_factory(factory: Callable[[], object], target: str) -> object:
    _check_no_arguments(factory, target)
    try:
        return factory()
    except Exception as exc:
        raise ConfigError(f"building the agent {target!r} failed: {exc!r}", path=SPEC_PATH) from exc


def create(target: str, settings: AgentSettings) -> Agent:
    found = _import(target)
    if isinstance(found, Agent):
        return found
    label = f"python agent {target!r}"
    if inspect.iscoroutinefunction(found):
        _check_no_arguments(found, target)
        return PythonAgent(build=found, label=label, timeout_s=settings.timeout_s)
    if isinstance(found, type) or (callable(found) and _method(found) is None):
        found = _call_factory(found, target)
        if isinstance(found, Agent):
            return found
        if inspect.isawaitable(found):
            pending = found

            async def build() -> object:
                return await pending

            return PythonAgent(build=build, label=label, timeout_s=settings.timeout_s)
    if _method(found) is None:
        raise ConfigError(
            f"{target!r} has no chat(message) or stream(message, context) method", path=SPEC_PATH
        )
    return PythonAgent(found, label=label, timeout_s=settings.timeout_s)
