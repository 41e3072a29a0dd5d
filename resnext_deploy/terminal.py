"""Text for the terminal: whatever a user or a file supplied, made one inert line."""

from __future__ import annotations

import re

from rich.markup import escape

ANSI_CODES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def plain(text: str) -> str:
    """``text`` as one safe terminal line: colour codes removed (torch puts them in its error
    messages), line breaks made spaces, other control characters (a hostile file name) shown
    escaped, and Rich markup escaped (a file named ``[red]x.png`` is text)."""
    text = ANSI_CODES.sub("", text).replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    return escape("".join(c if c.isprintable() else repr(c)[1:-1] for c in text))
