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
import urllib.parse
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
        # every state of every agent bubble, in order: streaming must only ever grow a prefix;
        # and every Content-Security-Policy violation the page itself sees
        page.add_init_script(
            """
            window.__agentTexts = [];
            window.__cspViolations = [];
            document.addEventListener("securitypolicyviolation",
              (e) => window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI));
            new MutationObserver(() => {
              for (const b of document.querySelectorAll(".msg.agent"))
                window.__agentTexts.push(b.textContent);
            }).observe(document, {subtree: true, childList: true, characterData: true});
            """
        )

    def csp_violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("window.__cspViolations")
        return found

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


# -- the rebuilt page: Markdown, hostile answers, small screens, reloads ----------------------

MARKDOWN = """## Login checks

1. valid credentials land on the **home** page
2. a *wrong* password is refused

- [OWASP testing guide](https://owasp.org/www-project-web-security-testing-guide/)
- `HttpOnly` cookies

| case | expected |
|---|---|
| empty fields | refused |
| locked user | 423 |

```python
def test_login(page):
    assert page.title() == "Home"
```
"""
CODE = 'def test_login(page):\n    assert page.title() == "Home"\n'
HOSTILE = (
    "<img src=x onerror=\"window.__pwned='img'\"> and "
    "<script>window.__pwned='script'</script>\n\n"
    "[click me](javascript:window.__pwned='md-link') and "
    "<a href=\"javascript:window.__pwned='html-link'\">raw link</a> "
    '<iframe src="/healthz"></iframe> <b onclick="window.__pwned=1">bold</b>\n\n'
    "![pixel](http://127.0.0.1:1/track.png)"
)
WIDE = (
    "| " + " | ".join(f"column {i} with a long header" for i in range(8)) + " |\n"
    "|" + "---|" * 8 + "\n| " + " | ".join(f"value {i}" for i in range(8)) + " |\n\n"
    "```\n" + "x = '" + "y" * 300 + "'\n```\n\n"
    "https://example.com/" + "a" * 200 + " and " + "W" * 120
)


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    """Screenshots for review: ``$QA_WS_REPORT_DIR/page`` when set, else the test's tmp dir."""
    base = Path(os.environ.get("QA_WS_REPORT_DIR") or tmp_path)
    path = base / "page"
    path.mkdir(parents=True, exist_ok=True)
    return path


def open_page(browser: Browser, width: int, scheme: str = "light", **options: Any) -> Page:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    context = browser.new_context(
        viewport={"width": width, "height": 844 if width < 600 else 800},
        color_scheme=scheme,  # type: ignore[arg-type]
        **options,
    )
    context.set_default_timeout(WAIT_MS)
    return context.new_page()


def connected(page: Page, url: str, token: str, user: str = "alice") -> None:
    from playwright.sync_api import expect

    page.goto(f"{http_base(url)}/#token={token}")
    expect(page.locator("#status")).to_have_text(re.compile(rf"^connected as {user} · "))


def test_answers_render_as_markdown_with_copyable_code(
    browser: Browser, spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = serve(spawn_server, tmp_path, free_port(), "--agent", "echo")
    page = open_page(browser, 1000, permissions=["clipboard-read", "clipboard-write"])
    watch = Watch(page)
    connected(page, server.url, issue_token(settings, "alice", ttl_s=600)[0])
    expect(page.locator("#attach")).to_be_visible()  # the server announces uploads (limits)

    box = page.locator("#input")
    box.fill(MARKDOWN)
    box.press("Enter")
    agent = page.locator(".msg.agent")
    expect(agent.locator("h2")).to_have_text("Login checks")
    expect(agent.locator("ol > li")).to_have_count(2)
    expect(agent.locator("ol strong")).to_have_text("home")
    expect(agent.locator("ol em")).to_have_text("wrong")
    link = agent.locator("a", has_text="OWASP testing guide")
    expect(link).to_have_attribute("href", re.compile(r"^https://owasp\.org/"))
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", re.compile(r"\bnoopener\b"))
    expect(agent.locator("ul code")).to_have_text("HttpOnly")
    expect(agent.locator("table th")).to_have_text(["case", "expected"])
    expect(agent.locator("table td")).to_have_count(4)
    code = agent.locator("pre code.language-python")
    expect(code).to_have_js_property("textContent", CODE)
    expect(page.locator(".turn .meta")).to_have_text(re.compile(r"total \d+"))
    expect(agent).to_have_attribute("title", re.compile(r"^\d+ ms$"))
    expect(agent).not_to_have_class(re.compile("streaming"))  # the cursor is gone

    copy = agent.get_by_role("button", name="Copy code")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == CODE
    # the question itself is shown as the user typed it, not rendered
    expect(page.locator(".msg.user")).to_have_js_property("textContent", MARKDOWN.strip())
    assert watch.errors == [] and watch.csp_violations() == []
    page.context.close()


def test_a_hostile_answer_stays_inert(
    browser: Browser, spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = serve(spawn_server, tmp_path, free_port(), "--agent", "echo")
    page = open_page(browser, 1000)
    watch = Watch(page)
    requested: list[str] = []
    page.on("request", lambda req: requested.append(req.url))
    connected(page, server.url, issue_token(settings, "alice", ttl_s=600)[0])
    ask(page, HOSTILE)
    agent = page.locator(".msg.agent")
    expect(agent).to_contain_text("<img src=x onerror=")  # raw HTML is shown as text
    expect(agent).to_contain_text("<script>")
    for tag in ("img", "script", "iframe", "b"):
        expect(page.locator(f"#log {tag}")).to_have_count(0)
    expect(page.locator("#log [onerror], #log [onclick]")).to_have_count(0)
    md_link = agent.locator("a", has_text="click me")
    expect(md_link).to_have_count(1)
    assert (md_link.get_attribute("href") or "").startswith("javascript") is False
    expect(page.locator('#log a[href^="javascript" i]')).to_have_count(0)
    md_link.click()
    pixel = agent.locator("a", has_text="pixel")  # an image became a link, never loaded
    expect(pixel).to_have_attribute("href", "http://127.0.0.1:1/track.png")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert not [u for u in requested if "/x" in u or "track.png" in u or "healthz" in u], requested
    assert watch.errors == [] and watch.csp_violations() == []
    page.context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_readable_at_390_px_and_on_a_laptop_in_light_and_dark(
    browser: Browser,
    spawn_server: Spawn,
    settings: Settings,
    tmp_path: Path,
    report_dir: Path,
    scheme: str,
) -> None:
    from playwright.sync_api import expect

    server = serve(spawn_server, tmp_path, free_port(), "--agent", "echo")
    token = issue_token(settings, "alice", ttl_s=600)[0]
    backgrounds = set()
    for width in (390, 1280):
        page = open_page(browser, width, scheme)
        watch = Watch(page)
        connected(page, server.url, token)
        ask(page, MARKDOWN)
        ask(page, WIDE)
        expect(page.locator(".msg.agent")).to_have_count(2)
        expect(page.locator(".msg.agent").last.locator("table")).to_be_visible()
        overflow = page.evaluate(
            "[document.documentElement.scrollWidth - document.documentElement.clientWidth,"
            " document.body.scrollWidth - document.body.clientWidth]"
        )
        assert overflow == [0, 0], f"horizontal scroll at {width} px: {overflow}"
        # wide blocks scroll inside themselves instead
        pre = page.locator(".msg.agent").last.locator("pre")
        assert pre.evaluate("e => e.scrollWidth > e.clientWidth")
        backgrounds.add(page.evaluate("getComputedStyle(document.body).backgroundColor"))
        shot = report_dir / f"chat-{width}px-{scheme}.png"
        page.screenshot(path=str(shot), full_page=False)
        assert shot.stat().st_size > 10_000
        assert watch.errors == [] and watch.csp_violations() == []
        page.context.close()
    (background,) = backgrounds  # one theme per scheme, at every width
    dark = background == "rgb(18, 19, 22)"
    assert dark is (scheme == "dark"), background


def test_a_reload_mid_answer_shows_the_answer_and_keeps_the_token_in_the_tab(
    browser: Browser, spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    """Today the server cancels the run on the reload's close (1001) and the page's resend of
    the same id asks again; once runs survive a disconnect (issue 10) the resend joins the run
    or the replay brings the answer. Either way the user sees the answer once."""
    from playwright.sync_api import expect

    server = serve(spawn_server, tmp_path, free_port(), "--demo-latency-ms", "3000")
    token = issue_token(settings, "alice", ttl_s=600)[0]
    page = open_page(browser, 1000)
    watch = Watch(page)
    connected(page, server.url, token)
    ask(page, QUESTION)
    agent = page.locator(".msg.agent")
    expect(agent).to_have_text(re.compile(r"^To test a login form"))  # mid-answer
    expect(agent).to_have_class(re.compile("streaming"))
    expect(page.locator(".turn .meta")).to_have_text(re.compile(r"first delta \d+"))
    session = page.evaluate("JSON.parse(sessionStorage.getItem('qa-ws.session'))")
    assert session["user"] == "alice" and session["id"]

    page.reload()
    status = page.locator("#status")
    expect(status).to_have_text(f"connected as alice · session {session['id'][:8]} (resumed)")
    expect(page.locator(".msg.user")).to_have_text(QUESTION)  # the conversation is still there
    expect(agent).to_have_count(1)
    expect(agent).to_have_text(LOGIN_ANSWER)
    expect(page.locator(".turn .meta")).to_have_text(re.compile(r"first delta .* · total \d"))
    expect(page.locator(".msg.user")).to_have_count(1)
    assert token not in page.url

    page.reload()  # after the answer: shown from this tab's storage, not asked again
    expect(status).to_have_text(re.compile(r"\(resumed\)$"))
    expect(agent).to_have_text(LOGIN_ANSWER)
    expect(agent).to_have_count(1)
    assert "#" not in page.url
    queries = [urllib.parse.urlsplit(u).query for u in watch.sockets]
    resume = f"session_id={session['id']}&last_seq="
    assert queries == ["", resume + "0", resume + "1"], queries  # the answer was seq 1
    storage = page.evaluate("[sessionStorage.getItem('qa-ws.token'), localStorage.length]")
    assert storage == [json.dumps(token), 0]  # this tab only, unless the user asks

    expect(page.locator("#token")).to_be_hidden()  # folded away while connected
    page.get_by_role("button", name="Token…").click()
    page.locator("#remember").check()
    assert page.evaluate("localStorage.getItem('qa-ws.token')") == json.dumps(token)
    assert page.evaluate("sessionStorage.getItem('qa-ws.token')") is None
    page.locator("#remember").uncheck()
    assert page.evaluate("localStorage.length") == 0
    assert watch.errors == [] and watch.csp_violations() == []
    page.context.close()


def test_stop_cancels_the_streaming_answer_by_keyboard(
    browser: Browser, spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = serve(spawn_server, tmp_path, free_port(), "--demo-latency-ms", "4000")
    page = open_page(browser, 390)
    watch = Watch(page)
    connected(page, server.url, issue_token(settings, "alice", ttl_s=600)[0])
    ask(page, QUESTION)
    agent = page.locator(".msg.agent")
    expect(agent).to_have_text(re.compile(r"^To test a login form"))
    stop = page.get_by_role("button", name="Stop this answer")
    stop.focus()
    page.keyboard.press("Enter")
    expect(page.locator(".msg.error")).to_have_text(re.compile(r"^cancelled: "))
    expect(agent).not_to_have_class(re.compile("streaming"))
    expect(stop).to_have_count(0)
    assert agent.inner_text() != LOGIN_ANSWER  # it stopped where it was
    expect(page.locator("#input")).to_be_enabled()
    server.stop()
    assert "outcome=cancelled" in server.output()
    assert watch.errors == [] and watch.csp_violations() == []
    page.context.close()


def test_tool_progress_is_listed_under_the_answer(
    browser: Browser, spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    """The page's own view code, in the page served by a real server, fed the documented
    ``agent_event`` frames directly, for kinds and hostile names no test agent sends (the
    end-to-end run from a real agent is the test after this one)."""
    from playwright.sync_api import expect

    server = serve(spawn_server, tmp_path, free_port(), "--agent", "echo")
    page = open_page(browser, 390)
    watch = Watch(page)
    connected(page, server.url, issue_token(settings, "alice", ttl_s=600)[0])
    tool = {"id": "t1", "name": "lookup_test_plan", "args": {"feature": "login"}}
    hostile = {"id": "t2", "name": "<img src=x onerror=alert(1)>"}
    frames = [
        {"kind": "tool_started", "tool": tool},
        {"kind": "tool_started", "tool": hostile},
        {"kind": "status", "text": "reading the plan"},
        {"kind": "reasoning", "text": "the login form "},
        {"kind": "reasoning", "text": "needs a lockout check"},
        {
            "kind": "tool_finished",
            "tool": {"id": "t1", "name": "lookup_test_plan"},
            "ms": 120,
            "result_preview": "12 cases",
        },
        {"kind": "tool_failed", "tool": hostile, "message": "timeout"},
        {"kind": "something_new", "text": "ignored"},
    ]
    page.evaluate(
        """async (frames) => {
            const view = await import("/static/view.js");
            const answer = new view.Answer("q1", null);
            answer.streaming(Date.now(), null);
            for (const f of frames) answer.event({type: "agent_event", reply_to: "q1", ...f});
        }""",
        frames,
    )
    items = page.locator(".turn .progress li")
    expect(items).to_have_text(
        [
            "lookup_test_plan done in 120 ms",
            "<img src=x onerror=alert(1)> failed: timeout",
            "reading the plan",
            "thinking: the login form needs a lockout check",
        ]
    )
    expect(items.first).to_have_attribute("title", "12 cases")
    expect(items.nth(1)).to_have_class("failed")
    expect(page.locator("#log img")).to_have_count(0)
    assert watch.errors == [] and watch.csp_violations() == []
    page.context.close()


REPO = Path(__file__).resolve().parents[2]


def tool_server(spawn_server: Spawn, tmp_path: Path, *args: str) -> ServerProcess:
    """A real server whose agent calls a tool and reports its files (tests/tool_agent.py)."""
    env = server_env(tmp_path, PYTHONPATH=str(REPO))
    server: ServerProcess = spawn_server(
        "--port", str(free_port()), "--agent", "python:tests.tool_agent:agent", *args, env=env
    )
    return server


@pytest.mark.parametrize("auth", [True, False], ids=["token", "no-auth"])
def test_a_png_attached_with_the_button_reaches_the_agent_and_tools_show_live(
    browser: Browser, spawn_server: Spawn, settings: Settings, tmp_path: Path, auth: bool
) -> None:
    from playwright.sync_api import expect

    from tests.server.test_files import PNG

    server = tool_server(spawn_server, tmp_path, *([] if auth else ["--no-auth"]))
    png = tmp_path / "screen.png"
    png.write_bytes(PNG)
    page = open_page(browser, 900)
    watch = Watch(page)
    page.add_init_script(
        """
        window.__progress = [];
        new MutationObserver(() => {
          for (const li of document.querySelectorAll(".progress li"))
            window.__progress.push(li.textContent);
        }).observe(document, {subtree: true, childList: true, characterData: true});
        """
    )
    if auth:
        connected(page, server.url, issue_token(settings, "alice", ttl_s=600)[0])
    else:  # Connect with no token; the upload names its session instead
        page.goto(http_base(server.url) + "/")
        page.get_by_role("button", name="Connect").click()
        expect(page.locator("#status")).to_have_text(re.compile(r"^connected as anon-\w{16} · "))
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Attach files").click()
    chooser.value.set_files(str(png))
    chip = page.locator("#tray .chip")
    expect(chip).to_have_attribute("data-state", "ready")  # uploaded with POST /files
    expect(chip.locator(".name")).to_have_text("screen.png")
    expect(chip.locator("img")).to_have_count(1)  # the thumbnail
    ask(page, "what is the plan login")
    expect(page.locator(".msg.user").last.locator("img")).to_have_attribute("alt", "screen.png")
    agent = page.locator(".msg.agent").last
    expect(agent).to_have_text(
        "Plan found. Files: screen.png (image/png, 33 bytes). You asked: what is the plan login"
    )
    expect(page.locator(".turn .progress li")).to_have_text(["lookup_test_plan done in 120 ms"])
    seen: list[str] = page.evaluate("window.__progress")
    assert seen[0] == 'running lookup_test_plan(feature="login")…', seen  # while it ran
    expect(page.locator("#tray")).to_be_hidden()  # the file went with that message
    assert watch.errors == [] and watch.csp_violations() == []
    page.context.close()
