"""Help output details shared by every command: how each parameter's value is named.

Typer's rich help prints each option's type, which for a flag (``--dev``, ``--json``,
``--help``) reads as if it took a value: a blank metavar is Typer's public way to hide it.
A repeatable option's type reads ``<list[Path]>``; it takes one value each time, so it shows
the element's type (``<path>``) as the other options do. The usage line names arguments as
Unix tools do (``MESSAGE``, ``[TOKEN]``, ``FILE...``), not ``{message}``.
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

_LIST_TYPE = re.compile(r"<list\[(?P<element>.+)\]>")
_PATH_TYPES = frozenset({"Path", "PurePath", "PosixPath", "WindowsPath"})


def _element_metavar(param: TyperOption, ctx: Any) -> str | None:
    """``<path>`` for a ``list[Path]`` option (``<file>`` with dir_okay=False), ``<int>`` for
    ``list[int]``; None when the option does not take a list."""
    match = _LIST_TYPE.fullmatch(param.display_type(ctx) or "")
    if match is None:
        return None
    element = match["element"]
    if element in _PATH_TYPES:
        element = str(getattr(param.type_descriptor, "path_type", "path"))
    return f"<{element}>"


def _named_values(params: list[Any], ctx: Any) -> list[Any]:
    for param in params:
        if not isinstance(param, TyperOption) or param.metavar is not None:
            continue
        if param.is_flag:
            param.metavar = ""
        else:
            param.metavar = _element_metavar(param, ctx)
    return params


def _usage_piece(param: Any, ctx: Any) -> list[str]:
    """An argument as ``NAME``, ``[NAME]`` when optional, ``NAME...`` when it takes several."""
    if not isinstance(param, TyperArgument) or param.metavar is not None:
        pieces: list[str] = param.get_usage_pieces(ctx)
        return pieces
    name = str(param.name or "").upper()
    if param.nargs != 1:
        name += "..."
    return [name if param.required else f"[{name}]"]


def _usage_pieces(command: TyperCommand | TyperGroup, ctx: Any) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        pieces.extend(_usage_piece(param, ctx))
    return pieces


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _named_values(super().get_params(ctx), ctx)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage_pieces(self, ctx)


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _named_values(super().get_params(ctx), ctx)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*_usage_pieces(self, ctx), self.subcommand_metavar]
