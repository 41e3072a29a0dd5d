"""Request bodies read whole, within a deadline and a bound on how many at once, before a request
reaches a replica.

Ray Serve's proxy hands a request to a replica as soon as its headers arrive, and the replica
then pulls the body through the proxy: a client that sends part of a body and stalls holds one
of the replica's ``max_ongoing_requests`` slots for as long as it likes, and ``2 x max batch``
such clients stop every request. :class:`UploadGate`, an ASGI middleware in front of the proxy
(Ray's ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` hook,
:func:`resnext_deploy.serve.proxy.proxy_middlewares`, which ``serve`` sets for the local Ray it
starts), reads each body first and passes on complete
requests only. A body must arrive within the deadline (408 after it) and stay within the size
limit (413); at most ``max_uploads`` are read at once, and a request that finds no free slot
within that time gets 503. Requests without a body (health checks, metadata) pass straight
through. The replica reads its body with :func:`read_body` too, so a cluster whose proxies lack
the gate still frees a stalled request's slot at the deadline.

Plain ASGI: no Ray, no web framework (Starlette only to hand the gate to Ray's hook).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

from resnext_deploy.errors import ConfigError
from resnext_deploy.serve.config import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_UPLOADS,
    ServeConfig,
    check_upload_limits,
)
from resnext_deploy.serve.protocol import RequestError

LIMITS_ENV = "RESNEXT_DEPLOY_UPLOADS"  # the gate's limits, as JSON (UploadLimits.to_env)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected before its body arrived: there is nobody to answer."""


@dataclass(frozen=True)
class UploadLimits:
    """What the gate allows: bytes per body, seconds per body, bodies read at once."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_uploads: int = DEFAULT_MAX_UPLOADS

    def __post_init__(self) -> None:
        check_upload_limits(self.max_body_bytes, self.timeout_s, self.max_uploads)

    @classmethod
    def of(cls, config: ServeConfig) -> UploadLimits:
        return cls(config.max_body_bytes, config.body_timeout_s, config.max_uploads)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str | None) -> UploadLimits:
        """The limits ``serve`` passed to the proxy (the defaults when unset). Raises
        :class:`ConfigError` for a value that is not :meth:`to_env`'s form."""
        if not text:
            return cls()
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{LIMITS_ENV} does not hold upload limits: {exc}") from None


async def read_body(
    scope: Scope,
    receive: Receive,
    max_bytes: int,
    timeout_s: float,
) -> bytes:
    """The request body of ``scope``, read from ``receive`` within ``timeout_s`` seconds.

    Raises :class:`RequestError` 413 as soon as the body exceeds ``max_bytes`` (declared or
    streamed, so an oversized upload is never held whole), 408 when it does not arrive in time;
    :class:`ClientGone` when the client disconnects first.
    """
    declared = _header(scope, b"content-length") or ""
    # A length too long to be a size is over any limit (and int() refuses 4,300+ digits).
    if declared.isdigit() and (len(declared) > 18 or int(declared) > max_bytes):
        shown = declared if len(declared) <= 18 else f"a {len(declared)}-digit number of"
        raise RequestError(413, f"request body of {shown} bytes exceeds the limit of {max_bytes}")
    try:
        return await asyncio.wait_for(_chunks(receive, max_bytes), timeout_s)
    except TimeoutError:
        raise RequestError(
            408,
            f"the request body did not arrive within {timeout_s:g} s; "
            "send the whole body without pauses",
        ) from None


async def _chunks(receive: Receive, max_bytes: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(413, f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class UploadGate:
    """ASGI middleware: reads every request body (see the module docstring), then calls ``app``
    with the whole body, so the app never waits on a client."""

    def __init__(self, app: ASGIApp, limits: UploadLimits | None = None) -> None:
        self.app = app
        self.limits = limits or UploadLimits()
        self._slots = asyncio.Semaphore(self.limits.max_uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive)
        except RequestError as exc:
            await send_error(send, exc.status, str(exc))
            return
        except ClientGone:
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        # Waiting for a slot does not eat into the body's deadline: while every slot is held by
        # stalled clients (each gone at its deadline), a good client's bytes wait in its socket.
        timeout = self.limits.timeout_s
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout)
        except TimeoutError:
            raise RequestError(
                503,
                f"the server is receiving {self.limits.max_uploads} other uploads; try again",
            ) from None
        try:
            return await read_body(scope, receive, self.limits.max_body_bytes, timeout)
        finally:
            self._slots.release()


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` whole, then what the client sends next (its
    disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1").strip()
    return None


def _has_body(scope: Scope) -> bool:
    """HTTP/1.1: a request has a body only with a Content-Length or a Transfer-Encoding."""
    length = _header(scope, b"content-length")
    return _header(scope, b"transfer-encoding") is not None or (
        length is not None and length != "0"
    )


async def send_error(send: Send, status: int, message: str) -> None:
    """``{"error": message}`` with ``status``, closing the connection (its body may be unread)."""
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def proxy_middlewares() -> list[Any]:
    """The proxy callback under its earlier import path (clusters started with it keep
    working): :func:`resnext_deploy.serve.proxy.proxy_middlewares`."""
    from resnext_deploy.serve.proxy import proxy_middlewares as current

    return current()
