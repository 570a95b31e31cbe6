"""``qa-ws bench``'s report paths, tried before the run: a run takes minutes, and a report it
cannot write afterwards would end it with exit 1, which means a gate failed. A missing parent
directory is created (as the reports always were); anything else is a usage error (exit 2).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from qa_ws_cli.bench.outcome import ReportPaths


def _nearest_existing(path: Path) -> Path:
    for ancestor in path.parents:
        if ancestor.exists():
            return ancestor
    return Path(path.anchor or ".")


def _parent_problem(flag: str, path: Path) -> str | None:
    """Why ``path``'s directory cannot hold it (made when missing), or None."""
    ancestor = _nearest_existing(path)
    if not ancestor.is_dir():
        return f"{flag} {path}: {ancestor} is a file, not a directory"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"{flag} {path}: cannot create its directory ({exc.strerror})"
    return None


def file_problem(flag: str, path: Path) -> str | None:
    """Why the report ``path`` cannot be written, or None (tried now, and left as it was)."""
    if path.is_dir():
        return f"{flag} {path}: it is a directory"
    problem = _parent_problem(flag, path)
    if problem is not None:
        return problem
    existed = path.exists()
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        return f"{flag} {path}: cannot write it ({exc.strerror})"
    if not existed:
        path.unlink(missing_ok=True)
    return None


def prefix_problem(flag: str, prefix: str) -> str | None:
    """Why files named ``PREFIX_…`` cannot be written, or None."""
    path = Path(prefix)
    problem = _parent_problem(flag, path)
    if problem is not None:
        return problem
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        return f"{flag} {prefix}: cannot write in {path.parent} ({exc.strerror})"
    return None


def report_problems(paths: ReportPaths) -> list[str]:
    """Every report path that cannot be written, as one sentence each."""
    named: list[tuple[str, Path | None]] = [
        ("--report-json", paths.json),
        ("--report-html", paths.html),
        ("--report-junit", paths.junit),
    ]
    problems = [file_problem(flag, path) for flag, path in named if path is not None]
    if paths.csv_prefix is not None:
        problems.append(prefix_problem("--report-csv", paths.csv_prefix))
    return [problem for problem in problems if problem is not None]
