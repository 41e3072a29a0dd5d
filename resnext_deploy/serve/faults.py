"""Faults answered in the protocol, in front of Ray Serve's proxy.

Ray's proxy answers some failures itself, in plain text: a replica that died under a request
gives ``500 Internal Server Error``, a timeout ``408``, a full queue ``503``. A Triton client
reads an error only from ``{"error": "..."}``, so :class:`FaultGate` rewrites every error
response that is not JSON into that form, keeping the status.

Readiness is a replica's to say (the model is loaded and answering), but while no replica is
alive a request waits in the proxy until one is back: a readiness probe would hang for the
10-40 s a replica takes to restart. The gate gives the replica :data:`READY_DEADLINE_S` to
answer a readiness probe, then answers ``503`` itself. Liveness is the proxy's: it answers
``/v2/health/live`` without a replica (a replica restarting is no reason to restart the server).

Plain ASGI, like :mod:`~resnext_deploy.serve.uploads`: no Ray, no web framework.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from http import HTTPStatus

from resnext_deploy.serve.uploads import ASGIApp, Message, Receive, Scope, Send, send_error

READY_DEADLINE_S = 0.5  # Kubernetes probes time out after 1 s by default
LIVE_PATH = "/v2/health/live"
MAX_DETAIL_CHARS = 300


def is_readiness(path: str) -> bool:
    """``/v2/health/ready`` and ``/v2/models/<name>[/versions/<v>]/ready``."""
    parts = [p for p in path.split("/") if p]
    if parts == ["v2", "health", "ready"]:
        return True
    return (
        len(parts) in (4, 6)
        and parts[:2] == ["v2", "models"]
        and parts[-1] == "ready"
        and (len(parts) == 4 or parts[3] == "versions")
    )


class FaultGate:
    """ASGI middleware: error responses as protocol JSON, readiness within a deadline,
    liveness from the proxy (see the module docstring)."""

    def __init__(self, app: ASGIApp, ready_deadline_s: float = READY_DEADLINE_S) -> None:
        self.app = app
        self.ready_deadline_s = ready_deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path == LIVE_PATH and method == "GET":
            await _empty(send, 200)
            return
        json_send = JsonErrors(send)
        try:
            if is_readiness(path) and method == "GET":
                await self._ready(scope, receive, json_send)
            else:
                await self.app(scope, receive, json_send)
        except Exception as exc:
            if json_send.started:
                raise
            await send_error(send, 500, _failure(f"{type(exc).__name__}: {exc}"))
            return
        if not json_send.started:
            # Where a replica dies under a request, Ray's proxy logs it and returns without an
            # answer; the web server would then send a plain-text 500.
            await send_error(send, 500, _failure("no answer from the replica"))

    async def _ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = _Forward(send)
        task = asyncio.ensure_future(self.app(scope, receive, answer.send))
        done, _ = await asyncio.wait({task}, timeout=self.ready_deadline_s)
        if task in done or answer.started:
            await task
            return
        answer.closed = True  # whatever the proxy sends once cancelled goes nowhere
        task.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await task
        await send_error(
            send,
            503,
            f"not ready: no replica answered within {self.ready_deadline_s:g} s (none is "
            "running, or every one is busy)",
        )


class _Forward:
    """A ``send`` that records whether the response started, and drops messages once closed."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.closed = False

    async def send(self, message: Message) -> None:
        if self.closed:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class JsonErrors:
    """A ``send`` that passes JSON and successful responses through and turns any other error
    response into ``{"error": ...}`` with the same status (its text kept as the detail)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._held: Message | None = None
        self._body: list[bytes] = []
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            if message["status"] >= 400 and not _is_json(message):
                self._held = message
                return
        elif message["type"] == "http.response.body" and self._held is not None:
            self._body.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                status, self._held = int(self._held["status"]), None
                text = b"".join(self._body).decode("utf-8", "replace").strip()
                await send_error(self._send, status, _message(status, text[:MAX_DETAIL_CHARS]))
            return
        await self._send(message)


def _message(status: int, text: str) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = f"HTTP {status}"
    detail = f": {text}" if text and text != phrase else ""
    if status >= 500:
        return f"{phrase} (Ray Serve's proxy{detail}); a replica may have failed: retry"
    return f"{phrase} (Ray Serve's proxy{detail})"


def _failure(cause: str) -> str:
    cause = " ".join(cause.split())[:MAX_DETAIL_CHARS]
    return f"the request failed in Ray Serve ({cause}); a replica may have failed: retry"


def _is_json(message: Message) -> bool:
    for key, value in message.get("headers", ()):
        if bytes(key).lower() == b"content-type":
            return bytes(value).split(b";")[0].strip().lower() == b"application/json"
    return False


async def _empty(send: Send, status: int) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]}
    )
    await send({"type": "http.response.body", "body": b""})
