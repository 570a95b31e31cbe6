"""``qa-ws status``'s arithmetic on two real /metrics texts (the server's own Metrics)."""

from __future__ import annotations

import pytest

from qa_ws_cli.client.admin import http_base
from qa_ws_cli.client.status import Reading, Status, quantile, summarize
from qa_ws_cli.server.metrics import Metrics


def test_rate_and_p95_come_from_the_interval_not_the_totals() -> None:
    metrics = Metrics()
    for _ in range(50):
        metrics.chat_latency.observe(20.0)  # before the window: must not count
    first = Reading.parse(metrics.render().decode(), at=0.0)
    for i in range(100):
        metrics.chat_latency.observe(0.04 if i < 90 else 0.4)
    metrics.errors["rate_limited"].inc(3)
    second = Reading.parse(metrics.render().decode(), at=2.0)
    status = Status("http://x")
    summarize(status, first, second)
    assert status.chats_per_s == pytest.approx(50.0)
    assert status.p95_s is not None and 0.25 < status.p95_s <= 0.5  # in the (0.25, 0.5] bucket
    assert status.errors == {"rate_limited": 3.0}
    assert quantile(0.5, first, second) == pytest.approx(0.025 + 0.025 * (50 / 90))


def test_no_chats_in_the_window_means_no_p95() -> None:
    text = Metrics().render().decode()
    assert quantile(0.95, Reading.parse(text, 0.0), Reading.parse(text, 1.0)) is None


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("ws://127.0.0.1:8765/ws", "http://127.0.0.1:8765"),
        ("wss://qa.example.com/chat/ws", "https://qa.example.com/chat"),
        ("http://[::1]:8765/", "http://[::1]:8765"),
    ],
)
def test_a_ws_url_and_its_http_base_name_one_server(url: str, base: str) -> None:
    assert http_base(url) == base


@pytest.mark.parametrize("url", ["ftp://host", "http://", "http://h:99999", "http://h/?a=1", "h:1"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"URL|url|http"):
        http_base(url)
