"""One validation layer for what a user or a file supplies: names, numbers, files and JSON.

Ground floor (imports only :mod:`resnext_deploy.errors`), so every command refuses the same
things the same way, before any long work: a name that is a path, a count that cannot finish, a
FIFO or a device where a file is expected, JSON nested or sized to exhaust the parser.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from resnext_deploy.errors import ConfigError, DeployError

# JSON a tool of ours writes is a few hundred KB and a handful of levels deep; a file far beyond
# that is not one of ours, and Python's parser recurses per level (a RecursionError, not a message).
MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 64
# Ints past this are not counts or sizes (and cost quadratic time to parse).
MAX_JSON_INT_DIGITS = 40
MAX_NAME_LENGTH = 200


def check_name(value: str, what: str, error: type[DeployError] = ConfigError) -> str:
    """``value`` if it is a plain name (one path component, printable, not ``.``/``..``): a
    report's ``--name``, a model name. Raises ``error`` naming ``what`` otherwise; a name is never
    a path, so nothing can be written outside the folder asked for."""
    if not value or value in (".", "..") or value.strip() != value:
        raise error(f"{what} {value!r} is not a usable name")
    if "/" in value or "\\" in value or "\x00" in value:
        raise error(f"{what} {value!r} is a path; give a plain name (no '/')")
    if not value.isprintable():
        raise error(f"{what} {value!r} holds control characters")
    if len(value) > MAX_NAME_LENGTH:
        raise error(f"{what} is {len(value)} characters long; at most {MAX_NAME_LENGTH}")
    return value


def check_int(
    value: Any, what: str, low: int, high: int, error: type[DeployError] = ConfigError
) -> int:
    """``value`` as an int within ``[low, high]``; raises ``error`` naming ``what`` and the range
    otherwise (also for a bool, a float or a string)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{what} must be a whole number, got {shown(value)}")
    if not low <= value <= high:
        raise error(f"{what} must be between {low:,} and {high:,}, got {shown(value)}")
    return value


def check_float(
    value: Any,
    what: str,
    low: float,
    high: float,
    error: type[DeployError] = ConfigError,
    *,
    low_open: bool = False,
) -> float:
    """``value`` as a finite float within ``[low, high]`` (``(low, high]`` with ``low_open``);
    raises ``error`` naming ``what`` for NaN, infinity, a non-number or a value out of range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{what} must be a number, got {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float: out of every range this checks
        number = math.inf if value > 0 else -math.inf
    too_low = number <= low if low_open else number < low
    if not math.isfinite(number) or too_low or number > high:
        bracket = "(" if low_open else "["
        raise error(
            f"{what} must be a finite number in {bracket}{low:g}, {high:g}], got {shown(value)}"
        )
    return number


def shown(value: Any, width: int = 40) -> str:
    """``repr(value)`` cut to about ``width`` characters, for an error message; never raises
    (``repr`` refuses ints of over 4,300 digits, also inside a list)."""
    try:
        text = repr(value)
    except ValueError:
        return f"a {type(value).__name__} holding a huge integer"
    return text if len(text) <= width else f"{text[: width // 2]}...({len(text)} characters)"


def regular_file(path: str | Path, what: str, error: type[DeployError] = ConfigError) -> Path:
    """``path`` if it is an existing regular file (symlinks followed). A FIFO, socket or device
    named like an image or a report would block or never end on reading; a folder is not a
    file. Raises ``error`` naming ``what`` and the path."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise error(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise error(f"{what} {path} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise error(f"{what} {path} is not a regular file (a FIFO, socket or device)")
    return path


def read_bytes(
    path: str | Path, what: str, limit: int, error: type[DeployError] = ConfigError
) -> bytes:
    """The content of the regular file ``path``, refused when over ``limit`` bytes (read at most
    ``limit + 1``, so /proc files that report size 0 are bounded too). Raises ``error``."""
    path = regular_file(path, what, error)
    try:
        # O_NONBLOCK: a file swapped for a FIFO after the check still cannot block the open.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise error(f"{what} {path} is over {limit / 1e6:g} MB; not a file this tool wrote")
    return data


def parse_json(text: str | bytes, what: str, error: type[DeployError] = ConfigError) -> Any:
    """``text`` parsed as strict JSON: no NaN/Infinity, no integer over
    ``MAX_JSON_INT_DIGITS`` digits, nesting at most ``MAX_JSON_DEPTH`` deep. Raises ``error``
    naming ``what`` for anything else (never a RecursionError or a ValueError)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise error(f"{what} is not UTF-8 text") from None
    if _nesting(text) > MAX_JSON_DEPTH:
        raise error(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    def bounded_int(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_JSON_INT_DIGITS:
            raise ValueError(f"an integer of {len(digits)} digits")
        return int(digits)

    try:
        return json.loads(text, parse_constant=refuse_constant, parse_int=bounded_int)
    except (ValueError, RecursionError) as exc:
        raise error(f"{what} is not valid JSON ({str(exc)[:120]})") from None


def _nesting(text: str) -> int:
    """The deepest bracket nesting of ``text`` outside strings (an upper bound of JSON depth)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def load_json(
    path: str | Path, what: str, error: type[DeployError] = ConfigError, limit: int = MAX_JSON_BYTES
) -> Any:
    """A JSON file read with :func:`read_bytes` and parsed with :func:`parse_json`."""
    return parse_json(read_bytes(path, what, limit, error), f"{what} {path}", error)
