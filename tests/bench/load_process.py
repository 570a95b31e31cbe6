"""Run bench's load process (`python -m qa_ws_cli.bench.runner run`) on a spec, as the CLI does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_load_process(
    tmp_path: Path, spec_json: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Write ``spec.json`` in ``tmp_path``, run the load process there (result in
    ``result.json``), bounded to 60 s."""
    (tmp_path / "spec.json").write_text(spec_json)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "qa_ws_cli.bench.runner",
            "run",
            "--spec",
            "spec.json",
            "--result",
            "result.json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
