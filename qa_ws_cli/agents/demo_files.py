"""What the demo agent's ``read_attachment`` tool says of a file, offline and deterministic.

A JUnit XML report is summed up (tests, failures, errors, skipped, and the first failures with
their messages); another text file by its size and the first lines that mention an error; an
image or other binary file by its type and size (the demo has no model to look at it). Parsing
is bounded by the gateway's upload limit and runs off the event loop (``asyncio.to_thread``),
through defusedxml (no entity declarations, no external references: an upload is untrusted
XML). Every string taken from a file is
flattened to one line without control characters: it goes back into the answer, which a
terminal prints.
"""

from __future__ import annotations

import re

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from qa_ws_cli.agents.events import Attachment

MAX_LISTED = 5  # failures (or error lines) named in a summary
MAX_QUOTE_CHARS = 120
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_ERROR_LINE = re.compile(r"error|fail|exception|traceback", re.IGNORECASE)


def one_line(text: str, limit: int = MAX_QUOTE_CHARS) -> str:
    """``text`` on one line, without control characters, at most ``limit`` characters."""
    flat = _CONTROLS.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def size_text(size: int) -> str:
    return f"{size} bytes" if size < 1024 else f"{size / 1024:.1f} KiB"


def describe(attachment: Attachment) -> str:
    """One or two sentences about ``attachment`` (blocking: call it in a thread)."""
    name = one_line(attachment.name, 80)
    if not attachment.is_text:
        kind = "an image" if attachment.is_image else "a binary file"
        return (
            f"{name} is {kind} ({attachment.mime}, {size_text(len(attachment.data))}); "
            "the offline demo agent does not read its content."
        )
    text = attachment.data.decode("utf-8", errors="replace")
    report = junit_summary(text) if "<testcase" in text else None
    return f"{name}: {report}" if report else f"{name}: {log_summary(text)}"


def junit_summary(text: str) -> str | None:
    """Tests, failures and the first failed tests of a JUnit XML report; None if not one."""
    try:
        root = fromstring(text)
    except (ParseError, DefusedXmlException):
        return None
    cases = list(root.iter("testcase"))
    if not cases:
        return None
    failed: list[str] = []
    skipped = 0
    for case in cases:
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is None:
            skipped += case.find("skipped") is not None
            continue
        test = ".".join(p for p in (case.get("classname"), case.get("name")) if p) or "a test"
        detail = problem.get("message") or (problem.text or "").strip() or problem.tag
        failed.append(f"{one_line(test, 80)} ({one_line(detail.splitlines()[0])})")
    counts = f"{len(cases)} tests, {len(failed)} failed, {skipped} skipped"
    if not failed:
        return f"{counts}: every test passed."
    more = len(failed) - MAX_LISTED
    listed = "; ".join(failed[:MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")
    return f"{counts}. Failed: {listed}."


def log_summary(text: str) -> str:
    """The size of a text file and the first lines that mention an error."""
    lines = text.splitlines()
    errors = [one_line(line) for line in lines if _ERROR_LINE.search(line)]
    head = f"{len(lines)} line" + ("" if len(lines) == 1 else "s")
    if not errors:
        return f"{head}, none of them mentions an error or a failure."
    more = len(errors) - MAX_LISTED
    quoted = "; ".join(f'"{e}"' for e in errors[:MAX_LISTED])
    verb = "mentions" if len(errors) == 1 else "mention"
    return f"{head}, {len(errors)} {verb} an error or a failure: {quoted}" + (
        f"; and {more} more." if more > 0 else "."
    )
