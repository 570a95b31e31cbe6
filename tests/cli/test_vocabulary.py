"""One option vocabulary across commands, and a working example in every command's --help.

Walks the real command tree (``qa_ws_cli.cli.main.app``): an option's short name means the same
long option everywhere, a flag is a flag everywhere, and the shared options of README's table
have the same names and arity wherever they appear. Each example in a help text is parsed by
the command it names (with ``--help`` appended, so nothing runs) and must be accepted.
"""

from __future__ import annotations

import re
import shlex
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner

from qa_ws_cli.cli.main import app

runner = CliRunner()

# README "Options every command shares": long name -> (short name, takes a value)
VOCABULARY: dict[str, tuple[str | None, bool]] = {
    "--url": ("-u", True),
    "--token": ("-t", True),
    "--sub": (None, True),
    "--config": ("-c", True),
    "--agent": ("-a", True),
    "--demo-latency-ms": (None, True),
    "--port": ("-p", True),
    "--json": (None, False),
    "--timeout": (None, True),
    "--carrier": (None, True),
    "--origin": (None, True),
}

# bench keeps Locust's -u for --users (so its --url and --token have no short names); these are
# its only known differences. Nothing else may differ.
PENDING_ON_BENCH_BRANCH = {
    "bench: -u is --users here, --url elsewhere",
    "bench: --url has no -u",
    "bench: --token has no -t",
}


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            yield from walk(sub, (*path, name))


COMMANDS = list(walk(typer.main.get_command(app)))


def options(command: Any) -> list[TyperOption]:
    return [p for p in command.params if isinstance(p, TyperOption)]


def deviations() -> set[str]:
    found: set[str] = set()
    short_to_long: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    flagness: dict[str, dict[bool, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path, command in COMMANDS:
        where = " ".join(path) or "qa-ws"
        for opt in options(command):
            longs = [o for o in opt.opts if o.startswith("--")]
            shorts = [o for o in opt.opts if not o.startswith("--")]
            for long in longs:
                flagness[long][bool(opt.is_flag)].add(where)
                for short in shorts:
                    short_to_long[short][long].add(where)
                if long in VOCABULARY:
                    want_short, takes_value = VOCABULARY[long]
                    if want_short is not None and want_short not in shorts:
                        found.add(f"{where}: {long} has no {want_short}")
                    if takes_value == bool(opt.is_flag):
                        kind = "is a flag" if opt.is_flag else "takes a value"
                        other = "takes a value" if opt.is_flag else "is a flag"
                        found.add(f"{where}: {long} {kind} here, {other} elsewhere")
    for short, longs in short_to_long.items():
        if len(longs) > 1:
            usual = max(longs, key=lambda long: (long == _vocab_long(short), len(longs[long])))
            for long, wheres in longs.items():
                if long != usual:
                    found |= {f"{w}: {short} is {long} here, {usual} elsewhere" for w in wheres}
    for long, kinds in flagness.items():
        if len(kinds) > 1 and long not in VOCABULARY:
            found.add(
                f"{long} is a flag in {sorted(kinds[True])}, a value in {sorted(kinds[False])}"
            )
    return found


def _vocab_long(short: str) -> str | None:
    return next((long for long, (s, _) in VOCABULARY.items() if s == short), None)


def test_the_same_option_means_the_same_thing_everywhere() -> None:
    found = deviations()
    unexpected = found - PENDING_ON_BENCH_BRANCH
    assert not unexpected, sorted(unexpected)
    assert all(item.startswith("bench: ") for item in found)


def test_the_shared_options_are_where_the_readme_says() -> None:
    by_command = {" ".join(path): {o for p in options(c) for o in p.opts} for path, c in COMMANDS}
    for name in ("send", "repl"):
        assert {"-u", "--url", "-t", "--token", "--sub", "--json", "-c", "--timeout"} <= (
            by_command[name]
        )
    assert {"-a", "--agent", "--demo-latency-ms"} <= by_command["serve"]
    assert {"-a", "--agent", "--demo-latency-ms"} <= by_command["demo"]
    assert "--latency-ms" not in by_command["demo"]
    assert {"--sub", "--json", "-c"} <= by_command["token issue"]
    assert {"--json", "--changed", "-c"} <= by_command["config show"]


def test_boolean_flags_show_no_type_in_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    for path, _ in COMMANDS:
        out = runner.invoke(app, [*path, "--help"]).output
        assert "<bool>" not in out, path
    serve_help = runner.invoke(app, ["serve", "--help"]).output
    assert "<int>" in serve_help  # options that take a value still say what they take


EXAMPLE = re.compile(r"(?:Examples?:\s+)?(?:[A-Z_]+=\S+\s+)*qa-ws\s+")


def _examples(help_text: str) -> list[list[str]]:
    """The ``qa-ws ...`` command lines in a help text's description (before the panels):
    ``Example: qa-ws ...``, ``VAR=value qa-ws ...`` and ``cat file | qa-ws ...`` included."""
    found = []
    for line in help_text.split("╭", 1)[0].splitlines():
        segment = line.rsplit(" | ", 1)[-1].strip()
        match = EXAMPLE.match(segment)
        if match:
            found.append(shlex.split(segment[match.end() :], comments=True))
    return found


@pytest.mark.parametrize(
    "path", [path for path, _ in COMMANDS], ids=lambda p: " ".join(p) or "qa-ws"
)
def test_every_help_has_examples_its_command_accepts(
    path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    shown = runner.invoke(app, [*path, "--help"])
    assert shown.exit_code == 0
    assert "Example" in shown.output, path
    examples = [words for words in _examples(shown.output) if tuple(words[: len(path)]) == path]
    assert examples, f"no `qa-ws {' '.join(path)} ...` example in its --help"
    for words in examples:
        parsed = runner.invoke(app, [*words, "--help"])  # parsed, not run: --help is eager
        assert parsed.exit_code == 0, (words, parsed.output)
        assert "Usage: qa-ws" in parsed.output
