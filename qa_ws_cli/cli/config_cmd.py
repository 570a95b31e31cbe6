"""``qa-ws config show|validate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from qa_ws_cli.cli.common import ConfigOption, fail, not_utf8, out_console, settings_from
from qa_ws_cli.cli.help import Command, Group
from qa_ws_cli.config import Settings, flatten, validate_file
from qa_ws_cli.errors import ConfigError

app = typer.Typer(
    help="""Inspect and check configuration.

    Examples:
      qa-ws config show --changed
      qa-ws config validate configs/production.example.yaml
    """,
    no_args_is_help=True,
    cls=Group,
)

# below this many columns for the value and source, rows stack instead of sharing a line
_MIN_VALUE_COLUMNS = 30


def _rows(config: Path | None) -> list[tuple[str, Any, str, Any]]:
    """(path, value, source, default) for every setting."""
    loaded = settings_from(config)
    defaults = flatten(Settings.model_validate({}))
    return [
        (path, value, loaded.source(path), defaults.get(path))
        for path, value in flatten(loaded.settings).items()
    ]


def _render(value: Any) -> str:
    return json.dumps(value, default=str)


@app.command(cls=Command)
def show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    changed: Annotated[
        bool, typer.Option("--changed", help="Only the settings that differ from the defaults.")
    ] = False,
) -> None:
    """Print the effective configuration, secrets redacted, with where each value came from:
    default, the file's path, the environment variable's name, or a flag.

    Examples:
      WEBSOCKET_PORT=9000 qa-ws config show
      qa-ws config show --changed --config my.yaml
    """
    every = _rows(config)
    rows = [row for row in every if row[1] != row[3]] if changed else every
    if as_json:
        out: dict[str, Any] = {}
        for path, value, source, default in rows:
            entry = {"value": value, "source": source, "changed": value != default}
            out[path] = entry | ({"default": default} if value != default else {})
        out_console.print_json(json.dumps(out, default=str))
        return
    names = [f"websocket.{path}" for path, *_ in rows]
    width = max(map(len, names), default=10)
    n_changed = sum(1 for _, value, _, default in every if value != default)
    title = f"qa-ws configuration: {n_changed} of {len(every)} differ from the defaults" + (
        "" if changed else " (in bold; --changed shows only those)"
    )
    if out_console.width - width - 4 < _MIN_VALUE_COLUMNS:
        _stacked(title, names, rows)
        return
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    table.add_column("setting", style="cyan", no_wrap=True, min_width=width)
    table.add_column("value", overflow="fold")
    table.add_column("source", style="dim", overflow="fold")
    for name, (_, value, source, default) in zip(names, rows, strict=True):
        style = "bold" if value != default else ""
        table.add_row(name, Text(_render(value), style=style), source)
    out_console.print(table)


def _stacked(title: str, names: list[str], rows: list[tuple[str, Any, str, Any]]) -> None:
    """Narrow terminals: the full name on its own line, then the value and its source."""
    out_console.print(title)
    for name, (_, value, source, default) in zip(names, rows, strict=True):
        out_console.print(Text(name, style="cyan"))  # whole, even past the edge: never cut
        line = Text("  ")
        line.append(_render(value), style="bold" if value != default else "")
        line.append(f"  ({source})", style="dim")
        out_console.print(line)


@app.command(cls=Command)
def validate(
    file: Annotated[Path, typer.Argument(help="YAML file to check.", exists=True, dir_okay=False)],
) -> None:
    """Check a config file; exits 1 naming the bad field's path (and, for an unknown key, the
    nearest valid one).

    Example: qa-ws config validate configs/production.example.yaml
    """
    try:
        validate_file(file)
    except ConfigError as exc:
        fail(exc.message)
    except UnicodeDecodeError as exc:
        fail(not_utf8(file, exc))
    out_console.print(f"{file}: valid")
