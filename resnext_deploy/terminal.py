"""Text for the terminal: whatever a user or a file supplied, shown as given and inert.

A file, class, tensor or backend name may look like Rich markup (``[/x]``, ``[red]``) or hold a
terminal escape (``\\x1b[2J`` in ONNX metadata). :class:`SafeConsole` is the console every
command prints on: a ``str`` given to it is never read as markup or emoji codes, and its control
characters are shown escaped; style comes only from :func:`styled` text. So printing a name
needs no call to remember, and a name can neither crash the output nor drive the terminal.
"""

from __future__ import annotations

import codecs
import re
import sys
from typing import Any

from rich.console import Console, RenderableType
from rich.status import Status
from rich.text import Text

COLOUR_CODES = re.compile(r"\x1b\[[0-9;]*m")


def printable(text: str) -> str:
    """``text`` with every control character but the line break shown escaped (``\\x1b``), so
    that it cannot move the cursor, clear the screen or colour the terminal. A file name that is
    not valid in the file system's encoding (its bytes smuggled in as lone surrogates) is shown
    as UTF-8 where it is, else with its bytes escaped."""
    if any("\udc80" <= c <= "\udcff" for c in text):
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            pass  # other lone surrogates too: each is shown escaped below
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)


def plain(text: str) -> str:
    """``text`` as one inert line, for a message: colour codes removed (torch puts them in its
    error messages), line breaks made spaces and other control characters shown escaped. It
    needs no markup escaping: :class:`SafeConsole` never reads a ``str`` as markup."""
    text = COLOUR_CODES.sub("", text).replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    return printable(text)


def styled(text: str, style: str) -> Text:
    """``text`` (shown as given, see :func:`printable`) in ``style``: the only way to colour."""
    return Text(printable(text), style=style)


def joined(*parts: str | Text) -> Text:
    """One text of ``parts``: a ``str`` shown as given, a :func:`styled` part keeps its style
    (a table cell that is partly coloured)."""
    return Text.assemble(*(p if isinstance(p, Text) else printable(p) for p in parts))


class SafeConsole(Console):
    """A Rich console on which a ``str`` is always literal text: no markup, no emoji codes,
    control characters shown escaped (:func:`printable`). That holds for everything Rich turns
    into text from a ``str``: printed strings, table cells, titles and headers, rules, statuses."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs.update(markup=False, emoji=False)
        return super().render_str(printable(text), **kwargs)

    def status(self, status: RenderableType, **kwargs: Any) -> Status:
        return LiteralStatus(status, console=self, **kwargs)


class LiteralStatus(Status):
    """A spinner whose ``str`` status is literal text (Rich's own reads it as markup)."""

    def __init__(self, status: RenderableType, **kwargs: Any) -> None:
        super().__init__(_literal(status), **kwargs)

    def update(self, status: RenderableType | None = None, **kwargs: Any) -> None:
        super().update(None if status is None else _literal(status), **kwargs)


def _literal(renderable: RenderableType) -> RenderableType:
    return Text(printable(renderable)) if isinstance(renderable, str) else renderable


def _bytes_or_escaped(error: UnicodeError) -> tuple[str | bytes, int]:
    """Encoding error handler: a file name's undecodable bytes (lone surrogates) are written
    back as they were, as ``surrogateescape`` does; any other character the stream cannot
    encode is written escaped (``\\xe9``), as ``backslashreplace`` does."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    chunk = error.object[error.start : error.end]
    if all("\udc80" <= c <= "\udcff" for c in chunk):
        return bytes(ord(c) - 0xDC00 for c in chunk), error.end
    return codecs.backslashreplace_errors(error)


ENCODE_ERRORS = "resnext_deploy.bytes_or_escaped"


def never_fail_to_encode() -> None:
    """Make stdout and stderr write what their encoding cannot hold escaped instead of raising
    :class:`UnicodeEncodeError`: with ``LANG=C`` or ``PYTHONIOENCODING=ascii`` a non-ASCII file
    name must not end a command after its work is done, taking its results with it."""
    codecs.register_error(ENCODE_ERRORS, _bytes_or_escaped)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors=ENCODE_ERRORS)
