"""The fault gate in front of Ray's proxy, on plain ASGI apps that fail as Ray's proxy does
(no answer, a plain-text error, an exception, a replica that never answers), and the check on
what the server's process tree exposes."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest

from resnext_deploy.errors import ServeError
from resnext_deploy.serve.exposure import (
    Listener,
    check_not_exposed,
    endpoints,
    exposed,
    is_loopback,
)
from resnext_deploy.serve.faults import FaultGate, is_readiness
from resnext_deploy.serve.proxy import with_host


def _call(app: Any, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes, float]:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # the client keeps the connection open
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    start = time.monotonic()
    asyncio.run(asyncio.wait_for(FaultGate(app, ready_deadline_s=0.2)(scope, receive, send), 5))
    took = time.monotonic() - start
    starts = [m for m in messages if m["type"] == "http.response.start"]
    assert len(starts) == 1, messages  # exactly one answer
    headers = {bytes(k).decode(): bytes(v).decode() for k, v in starts[0]["headers"]}
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return starts[0]["status"], headers, body, took


def _answering(status: int, body: bytes, content_type: bytes) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", content_type)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body[:5], "more_body": True})
        await send({"type": "http.response.body", "body": body[5:]})

    return app


def _error(body: bytes) -> str:
    return json.loads(body)["error"]


def test_plain_text_errors_from_ray_become_protocol_json_with_their_status() -> None:
    for status, text in [(500, b"Internal Server Error"), (503, b"Service Unavailable: queue"),
                         (408, b"Request timed out after 5s")]:  # fmt: skip
        got, headers, body, _ = _call(_answering(status, text, b"text/plain"), "/v2/x/infer")
        assert got == status and headers["content-type"] == "application/json"
        assert text.decode().split(":")[-1].strip() in _error(body)


def test_json_errors_and_answers_pass_unchanged() -> None:
    ours = json.dumps({"error": "input shape [1] does not fit"}).encode()
    got, _, body, _ = _call(_answering(400, ours, b"application/json"), "/v2/models/m/infer")
    assert (got, body) == (400, ours)
    got, _, body, _ = _call(_answering(200, b"ok-binary", b"application/octet-stream"), "/v2/m")
    assert (got, body) == (200, b"ok-binary")


def test_a_request_ray_leaves_unanswered_or_raises_on_is_a_json_500() -> None:
    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return None  # Ray's proxy after a replica died under the request

    async def raising(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("ActorDiedError: the actor died unexpectedly")

    for app, detail in [(silent, "no answer"), (raising, "ActorDiedError")]:
        status, _, body, _ = _call(app, "/v2/models/m/infer")
        assert status == 500 and detail in _error(body) and "retry" in _error(body)


def test_readiness_is_503_within_the_deadline_while_no_replica_answers() -> None:
    cancelled = []

    async def queued(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(3600)  # waits in Ray's queue for a replica
        except asyncio.CancelledError:
            cancelled.append(True)
            await send({"type": "http.response.start", "status": 499, "headers": []})
            raise

    for path in ("/v2/health/ready", "/v2/models/m/ready", "/v2/models/m/versions/1/ready"):
        status, _, body, took = _call(queued, path)
        assert status == 503 and took < 1.0 and "not ready" in _error(body)
    assert len(cancelled) == 3  # the probe does not stay queued


def test_readiness_from_a_replica_passes_and_liveness_is_the_proxys() -> None:
    assert _call(_answering(200, b"", b"text/plain"), "/v2/health/ready")[0] == 200
    unknown = json.dumps({"error": "unknown model 'x'"}).encode()
    assert _call(_answering(404, unknown, b"application/json"), "/v2/models/x/ready")[0] == 404

    async def never(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(3600)

    status, _, _, took = _call(never, "/v2/health/live")
    assert status == 200 and took < 0.1
    # Only the readiness paths are cut short.
    assert [is_readiness(p) for p in ("/v2/models/m/infer", "/v2/models/ready", "/v2/ready")] == [
        False, False, False,
    ]  # fmt: skip


def test_loopback_covers_mapped_ipv4_and_nothing_else() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2", "fe80::1"]))


def test_only_the_servers_own_endpoints_may_listen_beyond_loopback() -> None:
    listeners = [
        Listener(1, "ray::ProxyActor", "0.0.0.0", 8000),
        Listener(1, "ray::ProxyActor", "0.0.0.0", 8001),
        Listener(2, "raylet", "::", 4000),
        Listener(3, "gcs_server", "::ffff:127.0.0.1", 5000),
    ]
    allowed = endpoints("0.0.0.0", [8000])
    assert [(x.process, x.port) for x in exposed(listeners, allowed)] == [
        ("ray::ProxyActor", 8001), ("raylet", 4000),
    ]  # fmt: skip
    assert ("127.0.0.1", 8000) in endpoints("localhost", [8000])


def test_a_socket_of_this_process_on_every_interface_is_refused_by_name() -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServeError, match=rf"refusing to serve: .*0\.0\.0\.0:{port} \(every"):
            check_not_exposed(set())
        check_not_exposed(endpoints("0.0.0.0", [port]))  # its own endpoint is allowed
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        check_not_exposed(set())


def test_servers_bound_to_every_interface_are_moved_to_the_host() -> None:
    assert with_host("[::]:0", "127.0.0.1") == "127.0.0.1:0"
    assert with_host("[::]:9001", "::1") == "[::1]:9001"
    assert with_host("0.0.0.0:9001", "10.0.0.5") == "10.0.0.5:9001"
