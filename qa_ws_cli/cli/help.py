"""Help output details shared by every command: flags show no ``<bool>`` type.

Typer's rich help prints each option's type, which for a flag (``--dev``, ``--json``,
``--help``) reads as if it took a value. A blank metavar is Typer's public way to hide it.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup, TyperOption


def _quiet_flags(params: list[Any]) -> list[Any]:
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _quiet_flags(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _quiet_flags(super().get_params(ctx))
