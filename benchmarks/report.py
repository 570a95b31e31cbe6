"""The printed report of ``make perf``: markdown tables, ratios paired per round."""

from __future__ import annotations

import statistics
from typing import Any

Rounds = dict[str, list[dict[str, Any]]]

LABELS = {
    "bare": "bare aiohttp (parse JSON, answer one event)",
    "bare-uvloop": "bare aiohttp on uvloop",
    "socketio": "python-socketio (the Python team's usual pick)",
    "qa-ws": "qa-ws serve, full features, echo agent",
    "qa-ws-asyncio": "qa-ws serve, the same on asyncio's loop (server.event_loop: asyncio)",
    "qa-ws-redis": "qa-ws serve, full features, Redis store",
    "qa-ws-stream": "qa-ws serve, streaming agent",
}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def column(rounds: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rounds]


def paired(rounds: Rounds, a: str, b: str, key: str) -> float:
    """Median over rounds of a/b, each ratio taken within one round."""
    if a not in rounds or b not in rounds:
        return 0.0
    pairs = zip(column(rounds[a], key), column(rounds[b], key), strict=True)
    return round(median([x / y for x, y in pairs if y]), 2)


def spread(values: list[float]) -> str:
    return f"{median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})" if values else "-"


def same_loop_bare(name: str, loops: dict[str, str], present: Rounds) -> str:
    return "bare-uvloop" if loops.get(name) == "uvloop" and "bare-uvloop" in present else "bare"


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def chat_table(res: dict[str, Any]) -> list[str]:
    chat: Rounds = res["chat"]
    loops: dict[str, str] = res["loops"]
    lines = [
        "| server | loop | chats/s (range) | vs bare aiohttp | vs bare, same loop | p50 ms "
        "| p99 ms | p99 vs bare, same loop | server CPU µs/chat "
        "| CPU efficiency vs bare, same loop |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rounds in chat.items():
        ref = same_loop_bare(name, loops, chat)
        p99 = column(rounds, "p99_ms")
        lines.append(
            f"| {LABELS[name]} | {loops[name]} | {spread(column(rounds, 'chats_per_s'))} "
            f"| {paired(chat, name, 'bare', 'chats_per_s'):.2f} "
            f"| {paired(chat, name, ref, 'chats_per_s'):.2f} "
            f"| {median(column(rounds, 'p50_ms')):.1f} | {median(p99):.1f} "
            f"| {paired(chat, name, ref, 'p99_ms'):.2f} "
            f"| {median(column(rounds, 'server_cpu_us_per_unit')):.0f} "
            f"| {paired(chat, ref, name, 'server_cpu_us_per_unit'):.2f} |"
        )
    return lines


def stream_table(res: dict[str, Any]) -> list[str]:
    stream: Rounds = res["stream"]
    paced: Rounds = res["paced"]
    lines = [
        "| server | deltas/s (range) | vs bare aiohttp | median added latency ms (paced) "
        "| server CPU µs/delta |",
        "|---|---|---|---|---|",
    ]
    for name, rounds in stream.items():
        latency = median(column(paced[name], "delta_latency_p50_ms"))
        lines.append(
            f"| {LABELS[name]} | {spread(column(rounds, 'deltas_per_s'))} "
            f"| {paired(stream, name, 'bare', 'deltas_per_s'):.2f} | {latency:.3f} "
            f"| {median(column(rounds, 'server_cpu_us_per_unit')):.1f} |"
        )
    return lines


def idle_and_handshake_tables(res: dict[str, Any]) -> list[str]:
    idle: dict[str, dict[str, Any]] = res["idle"]
    bare_kib = idle.get("bare", {}).get("kib_per_connection", 0) or 1
    lines = ["| server | idle connections | KiB each | vs bare |", "|---|---|---|---|"]
    for name, row in idle.items():
        kib = row["kib_per_connection"]
        held = row["connections"]
        lines.append(f"| {LABELS[name]} | {held:,} | {kib:.1f} | {kib / bare_kib:.2f} |")
    shake: Rounds = res["handshake"]
    lines += [
        "",
        "| server | handshakes/s (range) | vs bare aiohttp | server CPU µs each | client CPU % |",
        "|---|---|---|---|---|",
    ]
    for name, rounds in shake.items():
        lines.append(
            f"| {LABELS[name]} | {spread(column(rounds, 'handshakes_per_s'))} "
            f"| {paired(shake, name, 'bare', 'handshakes_per_s'):.2f} "
            f"| {median(column(rounds, 'server_cpu_us_per_unit')):.0f} "
            f"| {max(column(rounds, 'client_cpu_pct')):.0f} |"
        )
    return lines


def targets(res: dict[str, Any]) -> list[str]:
    chat: Rounds = res["chat"]
    ref = same_loop_bare("qa-ws", res["loops"], chat)
    tput = paired(chat, "qa-ws", ref, "chats_per_s")
    efficiency = paired(chat, ref, "qa-ws", "server_cpu_us_per_unit")
    p99 = paired(chat, "qa-ws", ref, "p99_ms")
    vs_sio = paired(chat, "qa-ws", "socketio", "chats_per_s")
    relay = paired(res["stream"], "qa-ws-stream", "bare", "deltas_per_s")
    latency = median(column(res["paced"].get("qa-ws-stream", []), "delta_latency_p50_ms"))
    kib = res["idle"].get("qa-ws", {}).get("kib_per_connection", 0.0)
    shakes = median(column(res["handshake"].get("qa-ws", []), "handshakes_per_s"))
    redis_bare = paired(chat, "qa-ws-redis", "bare", "chats_per_s")
    redis_mem = paired(chat, "qa-ws-redis", "qa-ws", "chats_per_s")
    return [
        f"- chat throughput vs bare on the same loop ({ref}): {tput:.2f} (target >= 0.75: "
        f"{verdict(tput >= 0.75)}); p99 {p99:.2f}x bare's (target <= 2x: {verdict(p99 <= 2)}); "
        f"CPU per chat: bare's is {efficiency:.2f} of qa-ws's (steadier on a busy machine)",
        f"- vs python-socketio: {vs_sio:.2f}x (target >= 3x: {verdict(vs_sio >= 3)})",
        f"- streaming relay vs bare: {relay:.2f} (target >= 0.5: {verdict(relay >= 0.5)}); "
        f"median added latency {latency:.3f} ms (target < 1 ms: {verdict(latency < 1)})",
        f"- idle authenticated connection: {kib:.1f} KiB (target <= 16 KiB: {verdict(kib <= 16)})",
        f"- authenticated handshakes: {shakes:,.0f}/s (target >= 3,000: {verdict(shakes >= 3000)})",
        f"- Redis store vs bare: {redis_bare:.2f} (target >= 0.5: {verdict(redis_bare >= 0.5)}); "
        f"Redis store vs memory store: {redis_mem:.2f} (issue 10 wants write-through >= 0.6: "
        f"{verdict(redis_mem >= 0.6)})",
    ]


def render(res: dict[str, Any]) -> str:
    plan = res["plan"]
    busiest = max(
        (r["client_cpu_pct"] for rounds in res["chat"].values() for r in rounds), default=0.0
    )
    parts = [
        f"## Chats: closed loop, {plan['chat_connections']} connections, {plan['rounds']} rounds "
        f"of {plan['chat_s']} s per server (median, range over rounds)",
        *chat_table(res),
        "",
        f"## Streaming: {plan['stream_connections']} connections x {plan['stream_count']} "
        f"deltas per chat; latency at {plan['paced_connections']} connections, one piece every "
        f"{plan['paced_pause_ms']} ms",
        *stream_table(res),
        "",
        f"## Idle memory ({plan['idle']:,} connections, fresh processes); authenticated handshakes",
        *idle_and_handshake_tables(res),
        "",
        "## Targets of issue 15 (ratios within this run)",
        *targets(res),
        "",
        f"load generator: at most {busiest:.0f} % of one core during chats "
        f"({'it may be the bottleneck' if busiest > 85 else 'not the bottleneck'}); "
        f"wall time {res['wall_s']} s; server logs in {res['logs']}",
    ]
    return "\n".join(parts)
