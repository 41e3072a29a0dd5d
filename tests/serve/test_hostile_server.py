"""A hostile client and a careless operator against `serve` (issue 23, class 10, and serve's
options from class 8).

Bodies are read whole, within a deadline and a bound, before a request reaches a replica, so
stalled uploads cannot stop the model; numbers JSON cannot carry are refused with a 400 in JSON
and binary alike, and every answer is valid JSON; a model onnxruntime cannot open is one
``error:`` line before Ray starts; a signal during start-up exits 128 + signum and leaves no
process of Ray behind.

The Ray-free cases run first; the live ones share one server (Ray starts once).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import resnext_deploy
from resnext_deploy.errors import ConfigError
from resnext_deploy.serve.config import ServeConfig
from resnext_deploy.serve.model import ServedModel
from resnext_deploy.serve.routes import HttpRequest, InferenceAPI
from tests.serve.running import START_TIMEOUT_S, free_port, wait_until_serving
from tests.test_hostile import _rehash, assert_one_error, invoke, workspace  # noqa: F401

pytest.importorskip("ray.serve", reason="the serve tests need the [serve] extra")

MODEL = "resnext14_8x4d"
INFER = f"/v2/models/{MODEL}/infer"
SHAPE = [1, 3, 64, 64]
BODY_TIMEOUT_S = 3
HERE = str(Path(resnext_deploy.__file__).parents[1])  # the code under test, not an install


def strict_json(body: bytes) -> Any:
    """``body`` parsed as JSON proper: a bare NaN or Infinity fails."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(body, parse_constant=refuse)


def binary_body(array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """An infer request in Triton's binary tensor form, as tritonclient sends it."""
    raw = array.astype(np.float32).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    return header + raw, {"inference-header-content-length": str(len(header))}


def json_body(data: str) -> bytes:
    """An infer request whose ``data`` is the JSON text ``data`` (written as is)."""
    head = '{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": '
    return (head + data + "}]}").encode()


GOOD = json_body(json.dumps([0.0] * 12288))


# --- serve's own options (class 8) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--max-body-mb", "nan", "--max-body-mb"),
        ("--max-body-mb", "inf", "--max-body-mb"),
        ("--cpus-per-replica", "nan", "CPUs per replica"),
        ("--gpus-per-replica", "inf", "GPUs per replica"),
        ("--body-timeout-s", "nan", "body timeout"),
    ],
)
def test_serve_numbers_that_are_not_finite_are_one_error(
    workspace: Path,  # noqa: F811
    tiny_export: Path,
    option: str,
    value: str,
    fragment: str,
) -> None:
    out = workspace / "serve.yaml"
    result = invoke("serve", tiny_export, option, value, "--write-config", out)
    assert_one_error(result, fragment)
    assert value in result.stderr and not out.exists()


def test_settings_in_a_serve_config_file_are_checked(tiny_export: Path) -> None:
    args = ServeConfig(export_dir=tiny_export).to_args()
    for bad in (
        {"cpus_per_replica": float("nan")},
        {"replicas": 10**70},
        {"max_batch_size": "32"},
        {"batching": "no"},
        {"max_body_bytes": 2**80},
        {"body_timeout_s": float("inf")},
    ):
        with pytest.raises(ConfigError):
            ServeConfig.from_args(args | bad)


@pytest.mark.parametrize("target", ["/proc/serve.yaml", "/proc/self/nope/serve.yaml"])
def test_write_config_into_proc_is_one_error(
    workspace: Path,  # noqa: F811
    tiny_export: Path,
    target: str,
) -> None:
    result = invoke("serve", tiny_export, "--write-config", target)
    assert_one_error(result, "cannot write")
    assert str(Path(target).parent) in result.stderr


# --- the model, before Ray ----------------------------------------------------------------------


def test_a_garbage_but_rehashed_onnx_is_one_error_before_ray_starts(
    workspace: Path,  # noqa: F811
    tiny_export: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resnext_deploy.serve import run

    export = workspace / "garbage"
    shutil.copytree(tiny_export, export)
    (export / "model.onnx").write_bytes(np.random.default_rng(0).bytes(5000))
    _rehash(export, "model.onnx")  # the manifest agrees: only opening the model can tell

    def no_ray(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("Ray started before the model was checked")

    monkeypatch.setattr(run, "_start_ray", no_ray)
    result = invoke("serve", export, "--port", free_port())
    assert_one_error(result, "model.onnx")
    assert "Protobuf parsing failed" in result.stderr


# --- the protocol: one rule for non-finite numbers, valid JSON out ------------------------------


@pytest.fixture(scope="module")
def model(tiny_export: Path) -> ServedModel:
    return ServedModel(ServeConfig(export_dir=tiny_export, max_batch_size=4))


def _ask(api: InferenceAPI, path: str, body: bytes, headers: dict[str, str] | None = None):  # noqa: ANN202
    return asyncio.run(api.handle(HttpRequest("POST", path, body, headers or {})))


def _counting(model: ServedModel) -> tuple[InferenceAPI, list[int]]:
    calls: list[int] = []

    async def infer(batch: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(batch))
        return model.run(batch)

    return InferenceAPI(model, infer, 1_000_000), calls


@pytest.mark.parametrize(
    "data",
    [
        "[" + "9" * 5000 + "]",  # int() refuses it: was a 500
        "[" + "1" * 41 + "]",
        "[" + ", ".join(["1e39"] * 12288) + "]",  # finite in float64, infinite in FP32
        "[NaN" + ", 0" * 12287 + "]",
        "[-Infinity" + ", 0" * 12287 + "]",
    ],
    ids=["5000-digits", "41-digits", "fp32-overflow", "nan", "-inf"],
)
def test_json_numbers_a_model_cannot_take_are_400(model: ServedModel, data: str) -> None:
    api, calls = _counting(model)
    response = _ask(api, INFER, json_body(data))
    assert response.status == 400, response.body[:300]
    assert strict_json(response.body)["error"]
    assert calls == []


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_binary_tensors_with_non_finite_values_are_400_as_in_json(
    model: ServedModel, value: float
) -> None:
    api, calls = _counting(model)
    x = np.zeros(SHAPE, np.float32)
    x[0, 1, 2, 3] = value
    body, headers = binary_body(x)
    response = _ask(api, INFER, body, headers)
    assert response.status == 400, response.body[:300]
    assert "NaN or infinite" in strict_json(response.body)["error"]
    assert calls == []
    # The same tensor, finite, is answered.
    body, headers = binary_body(np.zeros(SHAPE, np.float32))
    assert _ask(api, INFER, body, headers).status == 200


def test_a_model_answering_nan_still_gets_a_valid_json_body(model: ServedModel) -> None:
    async def nan_logits(batch: np.ndarray) -> dict[str, np.ndarray]:
        return {"logits": np.full((len(batch), 7), np.nan, np.float32)}

    api = InferenceAPI(model, nan_logits, 1_000_000)
    png = io.BytesIO()
    Image.new("RGB", (80, 64), (90, 30, 200)).save(png, format="PNG")
    for path, body in ((INFER, GOOD), (f"/models/{MODEL}/classify", png.getvalue())):
        response = _ask(api, path, body)
        assert response.status == 500, response.body[:300]
        assert "NaN or infinity" in strict_json(response.body)["error"]


# --- the upload gate, without Ray ---------------------------------------------------------------


def test_the_upload_gate_times_out_stalled_bodies_and_passes_whole_ones() -> None:
    from resnext_deploy.serve.uploads import UploadGate, UploadLimits

    seen: list[bytes] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        seen.append(message["body"])
        assert not message["more_body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def call(gate: UploadGate, length: str | None, chunks: list[bytes], stall: bool) -> int:
        header = (
            (b"content-length", length.encode()) if length else (b"transfer-encoding", b"chunked")
        )
        queue = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
        if not stall:
            queue[-1]["more_body"] = False
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if queue:
                return queue.pop(0)
            await asyncio.sleep(3600)  # a client that stopped sending
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await gate({"type": "http", "headers": [header]}, receive, send)
        return sent[0]["status"]

    def stall(gate: UploadGate, n: int) -> list[asyncio.Task[int]]:
        return [asyncio.create_task(call(gate, "100", [b"{"], True)) for _ in range(n)]

    async def scenario() -> None:
        gate = UploadGate(app, UploadLimits(max_body_bytes=4096, timeout_s=0.5, max_uploads=3))
        start = time.monotonic()
        stalled = stall(gate, 2)
        await asyncio.sleep(0.05)
        assert await call(gate, "2", [b"{", b"}"], False) == 200  # a slot is free: at once
        assert time.monotonic() - start < 0.3 and seen == [b"{}"]
        assert await asyncio.gather(*stalled) == [408, 408]  # at their deadline
        assert time.monotonic() - start < 1.0
        # Every slot held: a good request waits for the first to free (not longer).
        start, stalled = time.monotonic(), stall(gate, 3)
        await asyncio.sleep(0.2)
        assert await call(gate, "2", [b"{}"], False) == 200
        assert 0.4 < time.monotonic() - start < 1.0
        assert await asyncio.gather(*stalled) == [408] * 3
        # Stalled clients queued ahead of it take the slots as they free: 503 at its deadline,
        # not a wait without end.
        start, stalled = time.monotonic(), stall(gate, 3)
        await asyncio.sleep(0.2)
        stalled += stall(gate, 3)
        await asyncio.sleep(0.05)
        assert await call(gate, "2", [b"{}"], False) == 503
        assert 0.6 < time.monotonic() - start < 1.0
        assert await asyncio.gather(*stalled) == [408] * 6
        # Over the size limit, declared (even absurdly) or streamed: 413.
        assert await call(gate, "9" * 5000, [b"{"], True) == 413
        assert await call(gate, None, [b"x" * 3000, b"x" * 3000], False) == 413
        assert seen == [b"{}"] * 2

    asyncio.run(scenario())


# --- the live server ----------------------------------------------------------------------------


def _serve_command(export: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "resnext_deploy", "serve", str(export),
        "--host", "127.0.0.1", "--port", str(port), "--max-batch-size", "4", "--threads", "1",
        *extra,
    ]  # fmt: skip


SERVE_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no network beyond loopback
    "RAY_ADDRESS": "",  # a local Ray, whatever the environment says
    "PYTHONPATH": HERE,
}


@pytest.fixture(scope="module")
def server(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A server with max batch 4 (so 8 requests fill its replica) and a short body deadline;
    yields its port."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = _serve_command(tiny_export, port, "--body-timeout-s", str(BODY_TIMEOUT_S))
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=os.environ | SERVE_ENV
        )
    try:
        wait_until_serving(proc, log)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _post(port: int, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{INFER}", data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _stalled_upload(port: int) -> socket.socket:
    """A connection that declares a body and sends only its first bytes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n".encode()
        + b'{"inputs": ['
    )
    return sock


def _until_closed(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("stalled", [8, 24])
def test_stalled_uploads_do_not_block_a_good_request(server: int, stalled: int) -> None:
    socks = [_stalled_upload(server) for _ in range(stalled)]
    try:
        time.sleep(0.5)  # every stalled request is in the server
        start = time.monotonic()
        status, body = _post(server, GOOD, {}, timeout=BODY_TIMEOUT_S + 10)
        assert status == 200, body[:300]
        assert time.monotonic() - start < BODY_TIMEOUT_S, "the good request waited on them"
        assert len(strict_json(body)["outputs"][0]["data"]) == 7
        # The stalled ones are answered 408 at the deadline and closed.
        for sock in socks:
            answer = _until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"did not arrive within" in answer
    finally:
        for sock in socks:
            sock.close()


def test_hostile_numbers_over_http_are_400_with_a_json_body(server: int) -> None:
    x = np.full(SHAPE, np.nan, np.float32)
    cases = [
        (json_body("[" + "9" * 5000 + "]"), {}),
        (json_body("[NaN" + ", 0" * 12287 + "]"), {}),
        binary_body(x),
        binary_body(np.full(SHAPE, np.inf, np.float32)),
    ]
    for body, headers in cases:
        status, answer = _post(server, body, headers, timeout=60)
        assert status == 400, answer[:300]
        assert strict_json(answer)["error"]
    status, answer = _post(server, GOOD, {}, timeout=60)
    assert status == 200 and strict_json(answer)["outputs"]


# --- signals during start-up --------------------------------------------------------------------


def _descendants(pid: int) -> dict[int, Any]:
    import psutil

    try:
        return {p.pid: p for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return {}


def _name(process: Any) -> str:
    import psutil

    try:
        return process.name()
    except psutil.Error:
        return ""


def _status(process: Any) -> str:
    import psutil

    try:
        return process.status()
    except psutil.Error:
        return psutil.STATUS_DEAD


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_exits_128_plus_signum_and_leaves_no_ray_process(
    tiny_export: Path, tmp_path: Path, signum: int
) -> None:
    import psutil

    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            _serve_command(tiny_export, free_port()),
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=os.environ | SERVE_ENV,
        )
    seen: dict[int, Any] = {}
    deadline = time.monotonic() + START_TIMEOUT_S
    # ~6 s in: the raylet has started its agents (ray::DashboardAgent, ray::RuntimeEnvAgent),
    # ray.init has not returned yet.
    while not any("Agent" in _name(p) for p in seen.values()):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        seen |= _descendants(proc.pid)
        time.sleep(0.05)
    proc.send_signal(signum)
    while proc.poll() is None:
        seen |= _descendants(proc.pid)
        time.sleep(0.05)
    stderr = log.read_text()
    _, alive = psutil.wait_procs(list(seen.values()), timeout=15)
    left = [(p.pid, _name(p)) for p in alive if _status(p) != psutil.STATUS_ZOMBIE]
    for process in alive:
        process.kill()
    assert proc.returncode == 128 + signum, stderr[-3000:]
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert not left, f"still running after serve exited: {left}"


def test_an_upload_whose_resize_would_take_gigabytes_is_400_before_decoding(
    model: ServedModel, tmp_path: Path
) -> None:
    """A 1 x 60,000 PNG is a few KB and under the pixel limit, but resized to the model's short
    side it would be millions of pixels wide: refused from the header, as predict refuses it."""
    from tests.hostile_images import write_strip_png

    api, calls = _counting(model)
    strip = write_strip_png(tmp_path / "strip.png", 1, 60_000).read_bytes()
    response = _ask(api, f"/models/{MODEL}/classify", strip)
    assert response.status == 400, response.body[:300]
    error = strict_json(response.body)["error"]
    assert "1x60000" in error and "pixels in all" in error
    assert calls == []
