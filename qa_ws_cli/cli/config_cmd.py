"""``qa-ws config show|validate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qa_ws_cli.cli.common import ConfigOption, fail, out_console, settings_from
from qa_ws_cli.config import flatten, validate_file
from qa_ws_cli.errors import ConfigError

app = typer.Typer(help="Inspect and check configuration.", no_args_is_help=True)


@app.command()
def show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the effective configuration, secrets redacted, with where each value came from.

    Example: WEBSOCKET_PORT=9000 qa-ws config show
    """
    loaded = settings_from(config)
    values = flatten(loaded.settings)
    rows = [(path, value, loaded.origins.get(path, "default")) for path, value in values.items()]
    if as_json:
        out_console.print_json(
            json.dumps(
                {path: {"value": value, "source": source} for path, value, source in rows},
                default=str,
            )
        )
        return
    title = f"qa-ws configuration (file: {loaded.config_file or 'none'})"
    table = Table(title=title, show_lines=False)
    table.add_column("setting", style="cyan")
    table.add_column("value")
    table.add_column("source", style="dim")
    for path, value, source in rows:
        table.add_row(f"websocket.{path}", json.dumps(value, default=str), source)
    out_console.print(table)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="YAML file to check.", exists=True, dir_okay=False)],
) -> None:
    """Check a config file; exits 1 naming the bad field's path.

    Example: qa-ws config validate configs/production.example.yaml
    """
    try:
        validate_file(file)
    except ConfigError as exc:
        fail(exc.message)
    out_console.print(f"{file}: valid")
