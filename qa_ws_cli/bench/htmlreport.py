"""The HTML report people read: the verdict and the gates first, then charts, then Locust's.

One self-contained file (inline SVG, no script, nothing fetched): a PASS/FAIL banner, the
gates (limit and measured), bar charts of the latency percentiles, per-second p50/p95 of
the time to the first delta and of the whole answer, users and connections over time, and
Locust's own report in an ``iframe`` (its ``srcdoc``, so it is still one file).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from qa_ws_cli.bench.reports import format_value
from qa_ws_cli.bench.samples import percentile

_W, _H, _PAD = 640, 220, 44
_COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c")
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#111}
.verdict{padding:1rem 1.5rem;border-radius:.5rem;font-size:1.6rem;font-weight:700;color:#fff}
.pass{background:#15803d}.fail{background:#b91c1c}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem}
td.num{text-align:right}.ok{color:#15803d;font-weight:700}.bad{color:#b91c1c;font-weight:700}
svg{background:#fafafa;border:1px solid #ddd;margin:.5rem 0}
iframe{width:100%;height:60rem;border:1px solid #ccc}
"""


def render_html(
    report: Mapping[str, Any], raw: Mapping[str, Any], locust_html: str | None = None
) -> str:
    passed = bool(report.get("passed"))
    run = report.get("run", {})
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>qa-ws bench {escape(str(run.get('scenario')))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<div class='verdict {'pass' if passed else 'fail'}'>"
        f"{'PASS' if passed else 'FAIL'}: qa-ws bench {escape(str(run.get('scenario')))}</div>",
        f"<p>{escape(_summary_line(report))}</p>",
        "<h2>Gates</h2>",
        _gates_table(report.get("gates", [])),
        "<h2>Latency percentiles (ms)</h2>",
        _percentile_bars(report.get("latency_ms", {})),
        "<h2>Time to first delta and whole answer, per second (ms)</h2>",
        _line_chart(_per_second(raw.get("timed", {})), "s since start", "ms"),
        "<h2>Users over time</h2>",
        _line_chart(_users(raw.get("users_timeline", [])), "s since start", "users"),
    ]
    if locust_html:
        parts += [
            "<h2>Locust's report</h2>",
            f"<iframe title='Locust report' srcdoc=\"{escape(locust_html, quote=True)}\"></iframe>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(
    path: Path, report: Mapping[str, Any], raw: Mapping[str, Any], locust_html: str | None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report, raw, locust_html), encoding="utf-8")


def _summary_line(report: Mapping[str, Any]) -> str:
    run, conns, thr = (
        report.get("run", {}),
        report.get("connections", {}),
        report.get("throughput", {}),
    )
    stages = f", stages {run['stages']}" if run.get("stages") else ""
    return (
        f"{run.get('users')} users{stages} for {run.get('duration_s')} s against {run.get('url')}; "
        f"peak {conns.get('peak')} connections, {thr.get('answers')} answers "
        f"({thr.get('answers_per_second')}/s); started {run.get('started_at')}"
    )


def _gates_table(gates: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        "<table><tr><th>gate</th><th>limit</th><th>measured</th><th>result</th><th>detail</th></tr>"
    ]
    for g in gates:
        ok = bool(g.get("passed"))
        rows.append(
            "<tr>"
            f"<td>{escape(str(g['name']))} ({escape(str(g['metric']))})</td>"
            f"<td class=num>{escape(g['comparison'])} "
            f"{escape(format_value(g['threshold'], g['unit']))}</td>"
            f"<td class=num>{escape(format_value(g['measured'], g['unit']))}</td>"
            f"<td class={'ok' if ok else 'bad'}>{'PASS' if ok else 'FAIL'}</td>"
            f"<td>{escape(str(g.get('detail', '')))}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _per_second(
    timed: Mapping[str, Sequence[Sequence[float]]],
) -> dict[str, list[tuple[float, float]]]:
    """p50 and p95 per wall-clock second, for the first delta and the whole answer."""
    labels = {"first_delta": "first delta", "chat": "answer"}
    start = min((rows[0][0] for rows in timed.values() if rows), default=0.0)
    series: dict[str, list[tuple[float, float]]] = {}
    for metric, label in labels.items():
        buckets: dict[float, list[float]] = defaultdict(list)
        for second, ms in timed.get(metric, []):
            buckets[second - start].append(ms)
        for pct in (50, 95):
            points = [(t, percentile(sorted(v), pct)) for t, v in sorted(buckets.items())]
            if points:
                series[f"{label} p{pct}"] = points
    return series


def _users(timeline: Sequence[Mapping[str, float]]) -> dict[str, list[tuple[float, float]]]:
    return {
        name: [(float(p["t"]), float(p[key])) for p in timeline]
        for name, key in (("users", "users"), ("connections held", "held"))
        if timeline
    }


def _line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]], xlabel: str, ylabel: str
) -> str:
    points = [p for line in series.values() for p in line]
    if not points:
        return "<p>(no samples)</p>"
    x_max = max(x for x, _ in points) or 1.0
    y_max = max(y for _, y in points) or 1.0
    inner_w, inner_h = _W - 2 * _PAD, _H - 2 * _PAD

    def xy(x: float, y: float) -> str:
        return f"{_PAD + x / x_max * inner_w:.1f},{_H - _PAD - y / y_max * inner_h:.1f}"

    out = [_frame(xlabel, ylabel, x_max, y_max)]
    for i, (name, line) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        coords = " ".join(xy(x, y) for x, y in line)
        out.append(f"<polyline fill=none stroke='{color}' stroke-width=2 points='{coords}'/>")
        out.append(
            f"<text x={_PAD + 8 + 150 * i} y=16 fill='{color}' font-size=12>{escape(name)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _frame(xlabel: str, ylabel: str, x_max: float, y_max: float) -> str:
    bottom, right = _H - _PAD, _W - _PAD
    return (
        f"<svg role=img width={_W} height={_H} viewBox='0 0 {_W} {_H}' "
        f"xmlns='http://www.w3.org/2000/svg'>"
        f"<line x1={_PAD} y1={bottom} x2={right} y2={bottom} stroke='#333'/>"
        f"<line x1={_PAD} y1={_PAD} x2={_PAD} y2={bottom} stroke='#333'/>"
        f"<text x={right} y={_H - 12} font-size=11 text-anchor=end>{escape(xlabel)} "
        f"(max {x_max:g})</text>"
        f"<text x=4 y={_PAD - 8} font-size=11>{escape(ylabel)} (max {y_max:.1f})</text>"
    )


def _percentile_bars(latency: Mapping[str, Mapping[str, float]]) -> str:
    metrics = [(name, s) for name, s in latency.items() if s]
    if not metrics:
        return "<p>(no samples)</p>"
    y_max = max(float(s["p99"]) for _, s in metrics) or 1.0
    group = (_W - 2 * _PAD) / len(metrics)
    bar = group / 4
    out = [_frame("metric", "ms", len(metrics), y_max)]
    for i, (name, s) in enumerate(metrics):
        x0 = _PAD + i * group + bar / 2
        for j, pct in enumerate(("p50", "p95", "p99")):
            height = float(s[pct]) / y_max * (_H - 2 * _PAD)
            out.append(
                f"<rect x={x0 + j * bar:.1f} y={_H - _PAD - height:.1f} width={bar * 0.9:.1f} "
                f"height={height:.1f} fill='{_COLORS[j]}'><title>{escape(name)} {pct} "
                f"{float(s[pct]):.1f} ms</title></rect>"
            )
        out.append(
            f"<text x={x0 + 1.5 * bar:.1f} y={_H - _PAD + 14} font-size=11 "
            f"text-anchor=middle>{escape(name)}</text>"
        )
    for j, pct in enumerate(("p50", "p95", "p99")):
        out.append(
            f"<text x={_W - 150 + 45 * j} y=16 fill='{_COLORS[j]}' font-size=12>{pct}</text>"
        )
    out.append("</svg>")
    return "".join(out)
