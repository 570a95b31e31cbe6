"""The chat page (``GET /``) in a real headless Chromium against real ``qa-ws serve`` processes:
what a user sees when they connect, chat, receive a broadcast, paste a refused token, or live
through a server restart. Driven by Playwright's Python API with Debian's ``/usr/bin/chromium``
(Playwright's own browser downloads are never used).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from qa_ws_cli.agents.builtin import demo_answer
from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.config import Settings
from tests.conftest import ServerProcess, free_port, server_env

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# the spawn_server and settings fixtures come from tests/conftest.py (sharing its secret)
Spawn = Callable[..., Any]

pytestmark = pytest.mark.timeout(60)

CHROMIUM = Path("/usr/bin/chromium")
# without the background-networking flags Chromium dials out at start, which a closed network
# answers with refusals and delays
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000  # the longest any single expectation waits
QUESTION = "how do I test a login form?"
LOGIN_ANSWER = demo_answer(QUESTION)


def unavailable(reason: str) -> NoReturn:
    """Skip when a browser test cannot run here; fail instead where everything must run (CI)."""
    if os.environ.get("QA_WS_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (QA_WS_REQUIRE_ALL=1: browser tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        installed = False  # skipped or failed below, outside this handler: no chained traceback
    else:
        installed = True
    if not installed:
        unavailable("the 'playwright' Python package is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as pw:
        try:
            launched = pw.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=20_000
            )
        except Error as exc:
            unavailable(f"{CHROMIUM} did not start: {exc.message.splitlines()[0]}")
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    context = browser.new_context(viewport={"width": 900, "height": 640})
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    yield opened
    context.close()


def serve(spawn_server: Spawn, tmp_path: Path, port: int, *args: str) -> ServerProcess:
    """A demo server on ``port`` with the default settings (its own page's origin is allowed)."""
    server: ServerProcess = spawn_server("--port", str(port), *args, env=server_env(tmp_path))
    return server


def http_base(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://").removesuffix("/ws")


def broadcast(ws_url: str, admin_token: str, message: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{http_base(ws_url)}/admin/broadcast",
        data=json.dumps({"message": message}).encode(),
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 202
        body: dict[str, Any] = json.loads(resp.read())
        return body


class Watch:
    """What the page does on the wire: each WebSocket it opens (URL) and the handshake headers
    Chromium sends (seen through the DevTools protocol); every text an agent bubble held; and
    what went wrong inside the page (uncaught errors, Content-Security-Policy violations)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.sockets: list[str] = []
        self.handshakes: list[dict[str, str]] = []
        self.errors: list[str] = []
        page.on("websocket", lambda ws: self.sockets.append(ws.url))
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(msg.text) if "Content Security Policy" in msg.text else None
            ),
        )
        cdp = page.context.new_cdp_session(page)
        cdp.on(
            "Network.webSocketWillSendHandshakeRequest",
            lambda ev: self.handshakes.append(
                {k.lower(): v for k, v in ev["request"]["headers"].items()}
            ),
        )
        cdp.send("Network.enable")
        # every state of every agent bubble, in order: streaming must only ever grow a prefix
        page.add_init_script(
            """
            window.__agentTexts = [];
            new MutationObserver(() => {
              for (const b of document.querySelectorAll(".msg.agent"))
                window.__agentTexts.push(b.textContent);
            }).observe(document, {subtree: true, childList: true, characterData: true});
            """
        )

    def agent_texts(self) -> list[str]:
        texts: list[str] = self.page.evaluate("window.__agentTexts")
        return texts


def ask(page: Page, text: str) -> None:
    from playwright.sync_api import expect

    box = page.locator("#input")
    expect(box).to_be_enabled()
    box.fill(text)
    box.press("Enter")
    expect(page.locator(".msg.user").last).to_have_text(text)
    expect(box).to_have_value("")


def test_connects_chats_streams_and_shows_broadcasts(
    page: Page, spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = serve(spawn_server, tmp_path, free_port(), "--demo-latency-ms", "300")
    token = issue_token(settings, "alice", ttl_s=600)[0]
    watch = Watch(page)
    page.goto(f"{http_base(server.url)}/#token={token}")

    status = page.locator("#status")
    expect(status).to_have_text(re.compile(r"^connected as alice · session \w{8}$"))
    assert "#" not in page.url and token not in page.url  # the token left the address bar
    expect(page.locator("#token")).to_have_attribute("type", "password")  # and is masked

    ask(page, QUESTION)
    agent = page.locator(".msg.agent")
    expect(agent).to_have_count(1)
    expect(agent).to_have_text(LOGIN_ANSWER)
    expect(agent).to_have_attribute("title", re.compile(r"^\d+ ms$"))
    texts = watch.agent_texts()
    growing = [t for t in dict.fromkeys(texts) if t and t != LOGIN_ANSWER]
    assert len(growing) >= 2, texts  # the bubble grew delta by delta before the final answer
    assert all(LOGIN_ANSWER.startswith(t) for t in texts), texts

    admin = issue_token(settings, "ops", ttl_s=600, scope="chat admin")[0]
    assert broadcast(server.url, admin, "maintenance at 18:00 UTC") == {"delivered_to": 1}
    expect(page.locator(".msg.system")).to_have_text("📣 maintenance at 18:00 UTC")

    box = page.locator("#input")  # Shift+Enter is a new line, Enter sends both lines
    box.press_sequentially("first line")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    expect(page.locator(".msg.user")).to_have_count(1)
    box.press("Enter")
    expect(page.locator(".msg.user").last).to_have_js_property(
        "textContent", "first line\nsecond line"
    )
    expect(agent.last).to_have_text(demo_answer("first line\nsecond line"))

    shot = tmp_path / "chat-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 5_000

    # the token travels as a subprotocol entry, never in the URL
    assert len(watch.sockets) == 1, watch.sockets
    assert watch.sockets[0] == server.url, watch.sockets
    assert len(watch.handshakes) == 1
    assert watch.handshakes[0]["sec-websocket-protocol"] == f"qa-ws.v1, bearer.{token}"
    server.stop()
    log = server.output()
    assert "connect " in log and "user=alice" in log
    assert token not in log and "token=" not in log.lower() and "[redacted]" not in log
    assert watch.errors == []


def test_a_refused_token_stops_retrying_and_a_good_one_connects(
    page: Page, spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = serve(spawn_server, tmp_path, free_port(), "--demo-latency-ms", "300")
    watch = Watch(page)
    page.goto(f"{http_base(server.url)}/#token=not-a-valid-token")

    status = page.locator("#status")
    expect(status).to_have_text(re.compile("refused"))
    page.wait_for_timeout(1_000)  # long enough for several retries, were there any
    expect(status).to_have_text(re.compile("refused"))
    assert len(watch.sockets) == 1, watch.sockets
    expect(page.locator("#input")).to_be_disabled()

    # an expired token says so
    expired = issue_token(settings, "alice", ttl_s=60, now=time.time() - 3600)[0]
    page.locator("#token").fill(expired)
    page.locator("#connect").click()
    expect(status).to_have_text(re.compile("expired"))
    page.wait_for_timeout(500)
    assert len(watch.sockets) == 2, watch.sockets

    # a good token, by hand: connected, and the chat works
    page.locator("#token").fill(issue_token(settings, "bob", ttl_s=600)[0])
    page.locator("#connect").click()
    expect(status).to_have_text(re.compile(r"^connected as bob · session \w{8}$"))
    ask(page, QUESTION)
    expect(page.locator(".msg.agent")).to_have_text(LOGIN_ANSWER)
    assert len(watch.sockets) == 3, watch.sockets
    server.stop()
    log = server.output()
    assert log.count("refused ") == 2
    assert "error=invalid_token" in log and "error=token_expired" in log
    assert watch.errors == []


def test_reconnects_by_itself_after_a_restart_on_the_same_port(
    page: Page, spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    port = free_port()
    first = serve(spawn_server, tmp_path, port, "--demo-latency-ms", "300")
    token = issue_token(settings, "alice", ttl_s=600)[0]
    watch = Watch(page)
    page.goto(f"{http_base(first.url)}/#token={token}")
    status = page.locator("#status")
    expect(status).to_have_text(re.compile(r"^connected as alice · session \w{8}$"))
    old_session = status.inner_text().rsplit(" ", 1)[1]
    ask(page, QUESTION)
    expect(page.locator(".msg.agent")).to_have_text(LOGIN_ANSWER)

    assert first.stop() == 0  # a graceful stop: shutdown notice, then close 1001
    expect(status).to_have_text(re.compile("reconnecting"))
    expect(page.locator("#input")).to_be_disabled()
    second = serve(spawn_server, tmp_path, port, "--demo-latency-ms", "300")
    assert second.url == first.url
    expect(status).to_have_text(re.compile(r"^connected as alice · session \w{8}$"))
    assert status.inner_text().rsplit(" ", 1)[1] != old_session  # resumed: false, a new one

    ask(page, "what about an API?")
    agent = page.locator(".msg.agent")
    expect(agent).to_have_count(2)
    expect(agent.last).to_have_text(demo_answer("api"))
    assert "user=alice" in second.output()
    assert watch.errors == []


def test_an_answer_cut_by_a_crash_is_asked_again_on_the_new_server(
    page: Page, spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    port = free_port()
    first = serve(spawn_server, tmp_path, port, "--demo-latency-ms", "3000")
    token = issue_token(settings, "alice", ttl_s=600)[0]
    watch = Watch(page)
    page.goto(f"{http_base(first.url)}/#token={token}")
    status = page.locator("#status")
    expect(status).to_have_text(re.compile("^connected as alice"))
    ask(page, QUESTION)
    agent = page.locator(".msg.agent")
    expect(agent).to_have_text(re.compile(r"^To test a login form"))  # the first delta
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # mid-answer, no goodbye
    expect(status).to_have_text(re.compile("reconnecting"))

    second = serve(spawn_server, tmp_path, port, "--demo-latency-ms", "300")
    expect(status).to_have_text(re.compile("^connected as alice"))
    # the unanswered question was sent again; its bubble restarted rather than doubling up
    expect(agent).to_have_count(1)
    expect(agent).to_have_text(LOGIN_ANSWER)
    texts = watch.agent_texts()
    assert all(LOGIN_ANSWER.startswith(t) for t in texts), texts
    expect(page.locator(".msg.user")).to_have_count(1)
    assert "resumed=False" in second.output() and "outcome=ok" in second.output()
    assert watch.errors == []


def test_the_page_connects_to_its_own_server_on_any_port(
    page: Page, spawn_server: Spawn, settings: Settings
) -> None:
    from playwright.sync_api import expect

    server = spawn_server("--demo-latency-ms", "300")  # default settings, an ephemeral port
    token = issue_token(settings, "alice", ttl_s=600)[0]
    page.goto(f"{http_base(server.url)}/#token={token}")
    status = page.locator("#status")
    expect(status).to_have_text(re.compile("^connected as|^refused"))
    assert status.inner_text().startswith("connected as alice"), server.output()
    assert "origin_not_allowed" not in server.output()
