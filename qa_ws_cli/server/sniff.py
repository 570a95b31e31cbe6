"""What an uploaded file is, decided by its bytes: never by its name or declared type.

An allowlist: images by their magic bytes (PNG, JPEG, GIF, WebP), PDF by ``%PDF-``, and text
that is valid UTF-8 without NUL bytes, told apart as JSON, XML (JUnit reports), CSV, Markdown,
a log, or plain text. Anything else is refused (``sniff`` answers ``None``). The text checks
look at the start of the file only, except JSON, which must parse whole.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

from qa_ws_cli.server.logs import BIDI_CONTROLS

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)
_HEAD_CHARS = 4096
_LOG_LINE = re.compile(
    r"^\s*(\[?\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}|\[?(TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL)\b)"
)
_MARKDOWN_LINE = re.compile(r"^(#{1,6} \S|```|[-*+] \S|\d+\. \S|> \S|\|.*\|\s*$)")
_MARKDOWN_LINK = re.compile(r"\[[^\]\n]+\]\([^)\s]+\)")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# in a file's name: every C0 and C1 control, DEL, the line separators and the bidi controls
_NAME_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029" + "".join(chr(c) for c in BIDI_CONTROLS) + "]"
)


def sniff(data: bytes) -> str | None:
    """The file's MIME type, or None when it is not one the gateway accepts."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    return classify_text(text)


def _looks_like_xml(body: str) -> bool:
    """A declaration, a closing tag, or one self-closed element (``<testsuite tests="0"/>``)."""
    return body.startswith("<?xml") or "</" in body or (body.endswith("/>") and "<" not in body[1:])


def classify_text(text: str) -> str:
    """JSON, XML, CSV, Markdown, log or plain, from the content."""
    body = text.lstrip("\ufeff").strip()
    if body[:1] in ("{", "[") and _is_json(body):
        return "application/json"
    if body.startswith("<") and body.endswith(">") and _looks_like_xml(body):
        return "application/xml"
    lines = [line for line in body[:_HEAD_CHARS].splitlines() if line.strip()][:20]
    if _is_log(lines):  # before CSV: a log's lines may all hold the same commas
        return "text/x-log"
    if _is_csv(lines):
        return "text/csv"
    if _is_markdown(lines, body[:_HEAD_CHARS]):
        return "text/markdown"
    return "text/plain"


def _is_json(body: str) -> bool:
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


def _is_csv(lines: list[str]) -> bool:
    """At least two lines, each with the same number (one or more) of commas or semicolons."""
    if len(lines) < 2:
        return False
    for separator in (",", ";", "\t"):
        counts = {line.count(separator) for line in lines[:-1]}  # the last may be cut off
        if len(counts) == 1 and counts.pop() >= 1 and lines[-1].count(separator) >= 1:
            return True
    return False


def _is_log(lines: list[str]) -> bool:
    """Most of the first lines start with a timestamp or a level."""
    if not lines:
        return False
    hits = sum(1 for line in lines if _LOG_LINE.match(line))
    return hits * 2 > len(lines)


def _is_markdown(lines: list[str], head: str) -> bool:
    return any(_MARKDOWN_LINE.match(line) for line in lines) or bool(_MARKDOWN_LINK.search(head))


def clean_name(filename: str | None, mime: str) -> str:
    """A name to show: no directory, no control characters, at most 120 characters.

    Percent escapes are undone first: browsers escape quotes and line breaks in a part's
    filename that way, and some clients escape everything.
    """
    name = unquote(filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _NAME_UNSAFE.sub("", name).strip().lstrip(".")
    if not name:
        name = "file." + mime.rsplit("/", 1)[-1].removeprefix("x-")
    if len(name) > 120:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: 119 - len(ext)] + dot + ext) if dot and len(ext) <= 10 else name[:120]
    return name
