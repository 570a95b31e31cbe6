"""What a bench run is asked to do, as plain data that crosses the process boundary.

The CLI builds a ``BenchSpec`` and writes it as JSON for the load process; the load process
turns it back into the same object. Secrets never go in it: a fixed token travels in the
child's environment (``QA_WS_TOKEN``) and the signing key in ``WEBSOCKET_SECRET_KEY``, the
same variables ``locust -f loadtests/locustfile.py`` reads.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

Scenario = Literal["chat", "idle", "burst", "churn", "reconnect"]
SCENARIOS: tuple[Scenario, ...] = get_args(Scenario)

# the latency the p95 gate looks at, per scenario
PRIMARY_METRIC: dict[str, str] = {
    "chat": "chat",
    "churn": "chat",
    "idle": "ping",
    "burst": "burst",
    "reconnect": "chat",
}
# metrics that are operations (they count as requests for the error rate); first_delta is a
# point inside a chat, not an operation of its own
OPERATIONS = ("connect", "chat", "ping", "burst")
LATENCY_METRICS = ("chat", "first_delta", "connect", "ping", "burst")
# per-answer figures that are not latencies (no Locust request event, no unit ms)
COUNT_METRICS = ("deltas",)
METRICS = LATENCY_METRICS + COUNT_METRICS
# metrics whose samples also carry their wall-clock second, for the report's charts
TIMED_METRICS = ("chat", "first_delta")
# mean pause between a user's actions; each wait is drawn from [0.5, 1.5] x this
DEFAULT_THINK_S: dict[str, float] = {
    "chat": 1.0,
    "idle": 5.0,
    "burst": 2.0,
    "churn": 0.5,
    "reconnect": 1.0,
}
DEFAULT_MESSAGE = "how do I test a login form?"
MAX_DURATION_S = 24 * 3600.0
MAX_PROCESSES = 64
TOKEN_ENV = "QA_WS_TOKEN"  # noqa: S105 - the variable's name, not a token
PROGRESS_PREFIX = "PROGRESS "  # the load process's progress lines on its stdout


Stage = tuple[float, int]  # (seconds, target users at its end)


def parse_stages(text: str) -> tuple[Stage, ...]:
    """``"30s:50,1m:150,30s:0"`` -> ((30.0, 50), (60.0, 150), (30.0, 0)), or ValueError.

    k6's ``stages``: each stage ramps linearly from the previous target (0 at the start) to
    its own over its duration.
    """
    from qa_ws_cli.config import parse_duration

    stages: list[Stage] = []
    for part in (p.strip() for p in text.split(",")):
        duration, sep, target = part.partition(":")
        if not sep or not (target.strip().isascii() and target.strip().isdigit()):
            raise ValueError(f"a stage is DURATION:USERS, like 30s:50 (got {part!r})")
        seconds = parse_duration(duration)
        if seconds <= 0:
            raise ValueError(f"a stage must last more than 0 s (got {part!r})")
        stages.append((seconds, int(target)))
    if not any(users for _, users in stages):
        raise ValueError("at least one stage must have users")
    return tuple(stages)


def format_stages(stages: Sequence[Sequence[float]]) -> str:
    return ",".join(f"{seconds:g}s:{int(users)}" for seconds, users in stages)


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_remote: bool = False) -> str:
    """The URL's host, or ValueError: a load test aimed at someone else's server is an attack."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"--url must start with ws:// or wss:// (got {url!r})")
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"--url has no host: {url!r}")
    try:
        parts.port  # noqa: B018 - parsing it raises on a bad port
    except ValueError:
        raise ValueError(f"--url has a bad port: {url!r}") from None
    if not allow_remote and not is_loopback_host(host):
        raise ValueError(
            f"refusing to load-test {host}: only loopback targets (127.0.0.0/8, ::1, localhost) "
            "unless --allow-remote is given (use it only against servers you run)"
        )
    return host


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What each virtual user needs to know, whoever started it (qa-ws bench or plain locust)."""

    think_time_s: float | None = None  # None: the scenario's default
    answer_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    burst_size: int = 10
    message: str = DEFAULT_MESSAGE
    run_id: str = "run"
    # users stop on their own after this many seconds (a second fence behind the runner's stop)
    max_user_seconds: float = 24 * 3600.0
    # every instance users may reach (reconnect users alternate); empty: Locust's host
    targets: tuple[str, ...] = ()

    def think(self, scenario: str) -> float:
        return DEFAULT_THINK_S[scenario] if self.think_time_s is None else self.think_time_s

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LoadOptions:
        """The ``QA_WS_*`` variables documented in ``loadtests/locustfile.py``."""

        def number(name: str) -> float | None:
            raw = environ.get(name, "").strip()
            if not raw:
                return None
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number (got {raw!r})") from None

        kwargs: dict[str, Any] = {}
        for attr, name in (
            ("think_time_s", "QA_WS_THINK_TIME"),
            ("answer_timeout_s", "QA_WS_ANSWER_TIMEOUT"),
            ("connect_timeout_s", "QA_WS_CONNECT_TIMEOUT"),
            ("burst_size", "QA_WS_BURST_SIZE"),
        ):
            value = number(name)
            if value is not None:
                kwargs[attr] = int(value) if attr == "burst_size" else value
        if environ.get("QA_WS_MESSAGE"):
            kwargs["message"] = environ["QA_WS_MESSAGE"]
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class BenchSpec:
    url: str
    scenario: Scenario = "chat"
    users: int = 150
    spawn_rate: float = 50.0
    duration_s: float = 60.0
    processes: int = 1
    load: LoadOptions = field(default_factory=LoadOptions)
    config_file: str | None = None  # the child loads the same Settings (issuer, audience, key)
    mint_tokens: bool = True  # False: every user presents QA_WS_TOKEN (or none)
    html: str | None = None  # Locust's own HTML report
    csv_prefix: str | None = None
    # [[seconds, target users], ...]: a LoadTestShape instead of users / spawn rate / duration
    stages: list[list[float]] | None = None
    # every instance users may reach; reconnect users alternate between them (url is the first)
    urls: list[str] = field(default_factory=list)
    # Locust's distributed mode: a master that waits for this many workers started elsewhere
    expect_workers: int = 0
    master_bind_host: str = "127.0.0.1"
    master_port: int = 5557
    workers_wait_s: float = 60.0

    @property
    def peak_users(self) -> int:
        return max(int(u) for _, u in self.stages) if self.stages else self.users

    @property
    def total_seconds(self) -> float:
        return sum(s for s, _ in self.stages) if self.stages else self.duration_s

    @property
    def targets(self) -> list[str]:
        return self.urls or [self.url]

    def problems(self) -> list[str]:
        """What is wrong with these options, each naming its ``qa-ws bench`` flag."""
        load = self.load
        checks = (
            (self.users < 1, "--users must be at least 1"),
            (self.spawn_rate <= 0, "--spawn-rate must be positive"),
            (
                not 0 < self.total_seconds <= MAX_DURATION_S,
                "--duration must be more than 0 and at most 24h",
            ),
            (self.scenario not in SCENARIOS, f"--scenario must be one of {', '.join(SCENARIOS)}"),
            (
                not 1 <= self.processes <= MAX_PROCESSES,
                f"--processes must be between 1 and {MAX_PROCESSES}",
            ),
            (self.processes > self.peak_users, "--processes must not exceed --users"),
            (
                not 0 <= self.expect_workers <= 1000,
                "--expect-workers must be between 1 and 1000",
            ),
            (not 0 < self.master_port < 65536, "--master-port must be between 1 and 65535"),
            (
                load.think_time_s is not None and load.think_time_s < 0,
                "--think-time must not be negative",
            ),
            (load.answer_timeout_s <= 0, "--answer-timeout must be positive"),
            (load.burst_size < 1, "--burst-size must be at least 1"),
            (not load.message.strip(), "--message must not be empty"),
        )
        return [text for bad, text in checks if bad]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> BenchSpec:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        load_data = data.pop("load", {})
        load_data["targets"] = tuple(load_data.get("targets", ()))
        load = LoadOptions(**load_data)
        return cls(load=load, **{k: v for k, v in data.items() if k in known})
