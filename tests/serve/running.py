"""Starting ``resnext-deploy serve`` in a subprocess for a test: one wait for "serving"."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

START_TIMEOUT_S = 240  # Ray's start on a busy 2-core machine


SERVING = re.compile(rb"^serving ", re.MULTILINE)  # the line serve prints once it answers


def wait_until_serving(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Return once ``log`` has serve's "serving ..." line (not the word in a traceback's
    ``print_serving``); fail the test with the log's end if ``proc`` exits or
    ``START_TIMEOUT_S`` passes first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not SERVING.search(log.read_bytes()):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


@contextmanager
def serving(
    command: list[str], log: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command`` (a ``serve``) with its output in ``log``, yield it once it serves, and
    kill it afterwards if it is still running."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until_serving(proc, log)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def free_port() -> int:
    """A TCP port free on loopback now (a server started next may take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
