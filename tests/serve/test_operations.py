"""`resnext-deploy serve` as an operator meets it: what listens where, at which priority, what
the statistics extension counts, and what clients see while no replica is up. One server with
two replicas, started under `nice -n 3` on loopback;
the sockets and priorities are read with psutil from outside (not from the code under test),
and answers are checked against plain onnxruntime on the export's model file."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resnext_deploy.predict import Classifier
from resnext_deploy.preprocess import preprocess
from tests.serve.running import free_port, serving

triton = pytest.importorskip("tritonclient.http", reason="the serve tests need the [test] extra")
psutil = pytest.importorskip("psutil")
PUSH_PERIOD_S = pytest.importorskip("resnext_deploy.serve.statstore").PUSH_PERIOD_S
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException

MODEL = "resnext14_8x4d"
NICE = 3


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    grpc_port: int
    metrics_port: int
    log: Path

    def get(self, path: str, timeout: float = 30) -> tuple[int, bytes, float]:
        start = time.monotonic()
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{path}", timeout=timeout
            ) as r:
                return r.status, r.read(), time.monotonic() - start
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), time.monotonic() - start

    def tree(self) -> list[Any]:
        me = psutil.Process(self.proc.pid)
        return [me, *me.children(recursive=True)]

    def replicas(self) -> list[Any]:
        # Not the statistics deployment's; busy, Ray appends the method being run.
        name = re.compile(rf"ray::ServeReplica:{MODEL}:{MODEL}(\.|\s|$)")
        return [p for p in self.tree() if name.match(" ".join(_cmdline(p)))]

    def requests_per_replica(self) -> dict[str, float]:
        """Ray's own count of the requests each replica of the model handled."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as answer:
            text = answer.read().decode()
        counts = re.findall(
            rf'^ray_serve_deployment_request_counter_total{{[^}}]*deployment="{MODEL}",'
            r'[^}]*replica="([^"]+)"[^}]*} ([0-9.e+]+)$',
            text,
            re.MULTILINE,
        )
        return {replica: float(value) for replica, value in counts}


def _cmdline(process: Any) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _title(process: Any) -> str:
    """The program's base name and its arguments: Ray's servers run from a path inside the
    virtual environment, as long as the checkout's path (a truncated full path hid them)."""
    cmdline = _cmdline(process) or [""]
    return " ".join([cmdline[0].rsplit("/", 1)[-1], *cmdline[1:]])[:80]


@pytest.fixture(scope="module")
def server(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if os.nice(0) > 19 - NICE:
        pytest.skip("this process runs too low a priority to start one NICE lower")
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    log = tmp_path_factory.mktemp("ops") / "serve.log"
    env = os.environ | {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ADDRESS": "",
        "RAY_metrics_report_interval_ms": "1000",
    }
    command = [
        "nice", "-n", str(NICE), sys.executable, "-m", "resnext_deploy", "serve",
        str(tiny_export), "--host", "127.0.0.1", "--port", str(port), "--max-batch-size", "8",
        "--threads", "1", "--replicas", "2", "--metrics-port", str(metrics_port),
        "--grpc-port", str(grpc_port),
    ]  # fmt: skip
    with serving(command, log, env) as proc:
        yield Server(proc, port, grpc_port, metrics_port, log)


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def test_every_socket_the_server_tree_listens_on_is_loopback(server: Server) -> None:
    pids = {p.pid: _title(p) for p in server.tree()}
    listening = [
        (pids[c.pid], c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.pid in pids and (c.status == psutil.CONN_LISTEN or not c.raddr)
    ]
    names = " ".join(name for name, _, _ in listening)
    # The premise: the whole tree is seen (Ray's servers and Serve's actors).
    for part in ("gcs_server", "raylet", "ServeController", "ProxyActor", "ServeReplica"):
        assert part in names, (part, listening)
    ports = {port for _, ip, port in listening}
    assert server.port in ports and server.grpc_port in ports
    beyond = [item for item in listening if not _is_loopback(item[1])]
    assert not beyond, beyond


def test_replicas_and_ray_run_at_the_priority_of_the_serve_command(server: Server) -> None:
    serve_nice = psutil.Process(server.proc.pid).nice()
    assert serve_nice == os.nice(0) + NICE  # the premise: `nice -n 3` took
    replicas = server.replicas()
    assert replicas
    assert {p.nice() for p in server.tree()} == {serve_nice}, [
        (_title(p)[:40], p.nice()) for p in server.tree()
    ]


@dataclass
class Load:
    """Closed-loop clients sending one colour photo each through tritonclient."""

    url: str
    batch: np.ndarray
    expected: np.ndarray
    ok: int = 0
    wrong: list[str] = field(default_factory=list)
    errors: list[InferenceServerException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = triton.InferenceServerClient(self.url, network_timeout=120)
        while not self.stop.is_set():
            self.ask(client)

    def ask(self, client: Any = None) -> None:
        client = client or triton.InferenceServerClient(self.url, network_timeout=120)
        tensor = triton.InferInput("input", list(self.batch.shape), "FP32")
        tensor.set_data_from_numpy(self.batch)
        try:
            logits = client.infer(MODEL, [tensor]).as_numpy("logits")
        except InferenceServerException as exc:
            self.errors.append(exc)
            return
        if np.abs(logits - self.expected).max() > 1e-5:
            self.wrong.append(str(logits))
        else:
            self.ok += 1


def _reference(tiny_export: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(tiny_export / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return session.run(["logits"], {"input": batch})[0]


def _photos(tiny_export: Path, copies: int) -> np.ndarray:
    from sklearn.datasets import load_sample_images

    return preprocess(list(load_sample_images().images) * copies, Classifier(tiny_export).spec)


def _settled_statistics(client: Any, **options: Any) -> dict[str, Any]:
    """The model's statistics once every replica's latest counts reached the sum (each replica
    sends its totals at most every PUSH_PERIOD_S): also those of a test that ran before."""
    time.sleep(PUSH_PERIOD_S + 1.0)
    return client.get_inference_statistics(MODEL, **options)["model_stats"][0]


def test_statistics_count_every_request_over_both_replicas(
    server: Server, tiny_export: Path
) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}", network_timeout=60)
    before = _settled_statistics(client)
    handled = server.requests_per_replica()
    batch = _photos(tiny_export, 1)  # 2 photos per request
    load = Load(f"127.0.0.1:{server.port}", batch, _reference(tiny_export, batch))
    sent = 24
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: load.ask(), range(sent)))
    assert load.ok == sent and not load.errors and not load.wrong
    after = _settled_statistics(client)
    # The premise: both replicas answered some of them (Ray's own per-replica counter).
    time.sleep(2.0)
    now = server.requests_per_replica()
    assert len(now) == 2 and all(now[r] > handled.get(r, 0) for r in now), (handled, now)
    stage = lambda s, name, key="count": int(s["inference_stats"][name][key])  # noqa: E731
    assert stage(after, "success") - stage(before, "success") == sent
    assert int(after["inference_count"]) - int(before["inference_count"]) == 2 * sent
    assert stage(after, "fail") == stage(before, "fail")
    runs = int(after["execution_count"]) - int(before["execution_count"])
    assert 1 <= runs <= sent
    for name in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert stage(after, name) - stage(before, name) == sent
        assert stage(after, name, "ns") > stage(before, name, "ns")
    assert sum(int(b["compute_infer"]["count"]) for b in after["batch_stats"]) == int(
        after["execution_count"]
    )


def test_a_killed_replica_fails_in_protocol_and_readiness_says_503_until_one_is_back(
    server: Server, tiny_export: Path
) -> None:
    batch = _photos(tiny_export, 4)  # 8 photos per request
    load = Load(f"127.0.0.1:{server.port}", batch, _reference(tiny_export, batch))
    threads = [threading.Thread(target=load.run) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        _wait_for(lambda: load.ok >= 10, 60, "answers before the kill")
        replicas = server.replicas()
        assert len(replicas) == 2
        for replica in replicas:
            replica.kill()
        psutil.wait_procs(replicas, timeout=10)
        readiness = _readiness_until_ready(server)
        answered_before = load.ok
        _wait_for(lambda: load.ok >= answered_before + 10, 60, "answers after the replica is back")
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(120)
    not_ready = [r for r in readiness if r[0] != 200]
    assert not_ready, "readiness never said not-ready while the replica was gone"
    for status, body, took in not_ready:
        assert status == 503 and took < 1.0, (status, body, took)
        assert "not ready" in json.loads(body)["error"]
    assert readiness[-1][0] == 200
    assert not load.wrong
    assert load.errors, "no request was in flight when the replica died"
    for exc in load.errors:  # in-flight requests fail with a message tritonclient could read
        assert "while decoding the response" not in exc.message(), exc
        assert exc.status() in ("500", "503"), exc


def _readiness_until_ready(server: Server) -> list[tuple[int, bytes, float]]:
    answers = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        answers.append(server.get("/v2/health/ready", timeout=30))
        if answers[-1][0] == 200 and len(answers) > 1:
            return answers
        time.sleep(0.2)
    pytest.fail(f"no replica came back within 180 s: {answers[-3:]}")


def _wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_grpc_serves_triton_clients_as_http_does(server: Server, tiny_export: Path) -> None:
    grpc = pytest.importorskip("tritonclient.grpc")
    client = grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert not client.is_model_ready("other")
    meta = client.get_model_metadata(MODEL, as_json=True)
    assert meta["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": ["-1", "3", "64", "64"]}
    ]
    assert client.get_model_config(MODEL, as_json=True)["config"]["max_batch_size"] == 8
    before = _settled_statistics(client, as_json=True)
    batch = _photos(tiny_export, 2)  # 4 colour photos
    tensor = grpc.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    logits = client.infer(MODEL, [tensor]).as_numpy("logits")
    np.testing.assert_allclose(logits, _reference(tiny_export, batch), rtol=0, atol=1e-5)
    top = client.infer(
        MODEL, [tensor], outputs=[grpc.InferRequestedOutput("logits", class_count=1)]
    )
    best = [int(row[0].decode().split(":")[1]) for row in top.as_numpy("logits")]
    assert best == list(np.argmax(_reference(tiny_export, batch), axis=1))
    bad = grpc.InferInput("image", list(batch.shape), "FP32")
    bad.set_data_from_numpy(batch)
    nan = batch.copy()
    nan[0, 0, 0, 0] = np.nan
    tensor.set_data_from_numpy(nan)
    for inputs, message in [([bad], "unexpected input 'image'"), ([tensor], "NaN")]:
        with pytest.raises(InferenceServerException, match=message) as caught:
            client.infer(MODEL, inputs)
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    after = _settled_statistics(client, as_json=True)
    success = lambda s: int(s["inference_stats"]["success"].get("count", 0))  # noqa: E731
    fail = lambda s: int(s["inference_stats"]["fail"].get("count", 0))  # noqa: E731
    assert success(after) - success(before) == 2 and fail(after) - fail(before) == 2
