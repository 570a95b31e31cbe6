"""Percentiles from raw samples, because the gate must not inherit Locust's rounding.

Locust stores response times in buckets (whole ms below 100, 10 ms steps up to 1000, 100 ms
steps above), so its p95 of 497 ms real samples may read 500. The gate compares against
the samples themselves with the nearest-rank definition: the reported p95 is a latency some
request really had, and at least 95 % of requests took no longer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence (0 < p <= 100)."""
    if not ordered:
        raise ValueError("no samples")
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    rank = math.ceil(p / 100.0 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    count: int
    min: float
    mean: float
    p50: float
    p95: float
    p99: float
    max: float

    def as_dict(self) -> dict[str, float | int]:
        return {k: (v if isinstance(v, int) else round(v, 3)) for k, v in asdict(self).items()}


def summarize(samples: Iterable[float]) -> LatencySummary | None:
    """None when there is nothing to summarize (for example deltas from a non-streaming agent)."""
    ordered = sorted(samples)
    if not ordered:
        return None
    return LatencySummary(
        count=len(ordered),
        min=ordered[0],
        mean=math.fsum(ordered) / len(ordered),
        p50=percentile(ordered, 50),
        p95=percentile(ordered, 95),
        p99=percentile(ordered, 99),
        max=ordered[-1],
    )


def saturated(cpu_windows: Sequence[float], *, threshold: float = 90.0, span: int = 3) -> bool:
    """Whether some ``span`` consecutive one-second windows averaged above ``threshold`` %.

    Locust looks only every 10 s, which a 15 s CI run may never reach; one busy second
    (garbage collection, a spawn burst) is not saturation, three in a row are.
    """
    if len(cpu_windows) < span:
        return False
    return any(
        math.fsum(cpu_windows[i : i + span]) / span > threshold
        for i in range(len(cpu_windows) - span + 1)
    )
