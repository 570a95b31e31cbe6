"""What a ``WEBSOCKET_*`` variable that should hold JSON (a list, an object) and does not is
told: one line naming the variable and how such a value is written, never a traceback."""

from __future__ import annotations

from typing import Any, get_args, get_origin

from pydantic import BaseModel

from qa_ws_cli.errors import ConfigError


def setting_annotation(root: type[BaseModel], path: str) -> Any:
    """The type of the setting ``path`` (``server__trusted_proxies``) names in ``root``; None
    when there is no such setting."""
    model: type[BaseModel] | None = root
    annotation: Any = None
    for part in path.lower().split("__"):
        info = model.model_fields.get(part) if model is not None else None
        if info is None:
            return None
        annotation = info.annotation
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation if is_model else None
    return annotation


def json_example(annotation: Any, value: str) -> str:
    """How a value of this type is written as JSON, using what the user wrote where it fits."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        first = next(iter(annotation.model_fields), "name")
        return f'an object is written as {{"{first}": ...}}'
    kinds = {get_origin(annotation), *(get_origin(a) for a in get_args(annotation))}
    if list in kinds or tuple in kinds or set in kinds:
        items = [item.strip() for item in value.strip("[]").split(",") if item.strip()]
        shown = ", ".join(f'"{item.strip(chr(34))}"' for item in items) or '"..."'
        return f"a list is written as [{shown}]"
    if dict in kinds:
        return 'an object is written as {"key": "value"}'
    return "see `qa-ws config show` for the setting's current value"


def env_json_error(root: type[BaseModel], path: str, name: str, value: str) -> ConfigError:
    """``WEBSOCKET_X: not valid JSON; a list is written as [...]``."""
    example = json_example(setting_annotation(root, path), value)
    return ConfigError(f"{name}: not valid JSON; {example}", path=name)
