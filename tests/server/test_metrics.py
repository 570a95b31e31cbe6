"""What a scrape of ``/metrics`` reads: the families, their types, labels and values."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from qa_ws_cli.server.metrics import Metrics


def scrape(metrics: Metrics) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    families: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        samples = families.setdefault(f"{family.type}:{family.name}", {})
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families


def test_counters_gauges_and_labels_read_back_as_prometheus_families() -> None:
    m = Metrics()
    m.connections.inc()
    m.connections.inc()
    m.connections.dec()
    m.sessions.set(7)
    m.connects.labels("true").inc()
    m.connects.labels("false").inc(2)
    m.connects.labels("true").inc()
    m.frames_chat.inc()
    m.errors["rate_limited"].inc()
    m.build.info({"version": "9.9", "instance": "i-1", "name": "edge"})
    got = scrape(m)
    assert got["gauge:qa_ws_connections"] == {("qa_ws_connections", ()): 1.0}
    assert got["gauge:qa_ws_sessions"] == {("qa_ws_sessions", ()): 7.0}
    connects = got["counter:qa_ws_connects"]
    assert connects[("qa_ws_connects_total", (("resumed", "true"),))] == 2.0
    assert connects[("qa_ws_connects_total", (("resumed", "false"),))] == 2.0
    created = got["gauge:qa_ws_connects_created"]  # the text format's own family for it
    assert created[("qa_ws_connects_created", (("resumed", "true"),))] > 1.7e9
    frames = got["counter:qa_ws_frames_received"]
    assert frames[("qa_ws_frames_received_total", (("type", "chat_message"),))] == 1.0
    assert frames[("qa_ws_frames_received_total", (("type", "ping"),))] == 0.0  # pre-bound
    errors = got["counter:qa_ws_errors_sent"]
    assert errors[("qa_ws_errors_sent_total", (("code", "rate_limited"),))] == 1.0
    assert errors[("qa_ws_errors_sent_total", (("code", "agent_error"),))] == 0.0
    build = got["gauge:qa_ws_build_info"]  # the text format has no info type
    labels = (("instance", "i-1"), ("name", "edge"), ("version", "9.9"))
    assert build == {("qa_ws_build_info", labels): 1.0}
    assert ("qa_ws_handshakes_refused_total", ()) not in got["counter:qa_ws_handshakes_refused"]


def test_a_histogram_counts_each_bucket_cumulatively_with_inclusive_bounds() -> None:
    m = Metrics()
    for seconds in (0.001, 0.005, 0.3, 29.0, 45.0):  # 0.005 is on a bound: it is counted there
        m.chat_latency.observe(seconds)
    got = scrape(m)["histogram:qa_ws_chat_latency_seconds"]
    bucket = {dict(labels)["le"]: v for (name, labels), v in got.items() if name.endswith("bucket")}
    assert bucket["0.005"] == 2.0
    assert bucket["0.25"] == 2.0
    assert bucket["0.5"] == 3.0
    assert bucket["30.0"] == 4.0
    assert bucket["+Inf"] == 5.0
    assert got[("qa_ws_chat_latency_seconds_count", ())] == 5.0
    assert abs(got[("qa_ws_chat_latency_seconds_sum", ())] - 74.306) < 1e-9
    created = scrape(m)["gauge:qa_ws_chat_latency_seconds_created"]
    assert created[("qa_ws_chat_latency_seconds_created", ())] > 1.7e9
    first = scrape(m)["histogram:qa_ws_first_delta_seconds"]
    assert first[("qa_ws_first_delta_seconds_count", ())] == 0.0  # listed before any answer
