"""Prometheus metrics, one registry per app (no module-level state), children pre-bound."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from qa_ws_cli.protocol.codes import ErrorCode

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("qa_ws_connections", "Open WebSocket connections", registry=r)
        self.sessions = Gauge("qa_ws_sessions", "Sessions held in memory", registry=r)
        self.inflight = Gauge("qa_ws_chats_in_flight", "Answers being generated", registry=r)
        self.connects = Counter("qa_ws_connects", "Accepted connections", ["resumed"], registry=r)
        self.refused = Counter(
            "qa_ws_handshakes_refused", "Refused handshakes by error", ["error"], registry=r
        )
        self.closes = Counter(
            "qa_ws_closes", "Closed connections by close code", ["code"], registry=r
        )
        frames = Counter("qa_ws_frames_received", "Client frames by type", ["type"], registry=r)
        self.frames_chat = frames.labels("chat_message")
        self.frames_ping = frames.labels("ping")
        self.frames_cancel = frames.labels("cancel")
        self.frames_bad = frames.labels("invalid")
        self.frames_over_budget = Counter(
            "qa_ws_frames_over_budget",
            "Frames refused past limits.max_frames_per_second",
            registry=r,
        )
        errors = Counter("qa_ws_errors_sent", "Error events sent by code", ["code"], registry=r)
        self.errors = {code.value: errors.labels(code.value) for code in ErrorCode}
        self.chat_latency = Histogram(
            "qa_ws_chat_latency_seconds",
            "Time from chat_message to agent_response",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.slow_consumers = Counter(
            "qa_ws_slow_consumer_closes", "Connections closed for an overflowing queue", registry=r
        )
        self.broadcasts = Counter("qa_ws_broadcasts", "Admin broadcasts sent", registry=r)
        self.first_delta = Histogram(
            "qa_ws_first_delta_seconds",
            "Time from chat_message to the first agent_delta of its answer",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        notes = Counter(
            "qa_ws_notifications",
            "Notifications: delivered to a live connection (counted by the instance that sent "
            "it), or stored in an offline user's inbox",
            ["outcome"],
            registry=r,
        )
        self.notes_delivered = notes.labels("delivered")
        self.notes_stored = notes.labels("stored")
        dropped = Counter(
            "qa_ws_notifications_dropped",
            "Kept notifications dropped: the inbox overflowed, or they expired unread",
            ["reason"],
            registry=r,
        )
        self.notes_overflowed = dropped.labels("overflow")
        self.notes_expired = dropped.labels("expired")
        self.build = Info("qa_ws_build", "Version and instance of this server", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
