"""The Grafana dashboard and the Prometheus config in configs/: every metric a panel queries
exists on a live server's /metrics, and Prometheus scrapes two instances."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Running

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
_METRIC = re.compile(r"\b(qa_ws_[a-z0-9_]+)")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "info": ("_info",),
    "gauge": ("",),
}


def dashboard_queries() -> list[str]:
    dashboard = json.loads((CONFIGS / "grafana" / "qa-ws.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["query"]["query"])
    return exprs


async def series_names(http: aiohttp.ClientSession, running: Running) -> set[str]:
    async with http.get(running.http + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


async def test_every_metric_the_dashboard_queries_exists(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    exprs = dashboard_queries()
    wanted = {name for expr in exprs for name in _METRIC.findall(expr)}
    assert len(exprs) >= 15 and len(wanted) >= 12
    missing = wanted - await series_names(http, gateway)
    assert not missing, f"the dashboard queries metrics the server does not have: {missing}"


def test_the_dashboard_covers_what_an_operator_watches() -> None:
    dashboard = json.loads((CONFIGS / "grafana" / "qa-ws.json").read_text())
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "connections",
        "handshake refusals",
        "chats per second",
        "latency",
        "first delta",
        "errors",
        "slow consumers",
        "rate-limited",
        "resumed",
        "agent errors",
    ):
        assert topic in titles, topic
    exprs = " ".join(dashboard_queries())
    assert "$instance" in exprs and "by (instance" in exprs  # per instance
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_prometheus_scrapes_two_instances() -> None:
    config = yaml.safe_load((CONFIGS / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert len(set(targets)) == 2
