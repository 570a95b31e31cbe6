"""The package's curated API: every name in __all__ resolves, and importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import qa_ws_cli


def test_every_exported_name_resolves() -> None:
    assert qa_ws_cli.__all__ == sorted(qa_ws_cli.__all__)
    assert set(qa_ws_cli.__all__) == {*qa_ws_cli._EXPORTS, "__version__"}
    for name in qa_ws_cli.__all__:
        assert getattr(qa_ws_cli, name) is not None
    with pytest.raises(AttributeError, match="no attribute"):
        qa_ws_cli.nothing_here  # noqa: B018


def test_import_loads_neither_aiohttp_nor_pydantic() -> None:
    code = "import sys, qa_ws_cli; print('aiohttp' in sys.modules, 'pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
