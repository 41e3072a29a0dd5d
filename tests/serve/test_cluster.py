"""`resnext-deploy serve --address` on a three-node Ray cluster made on this machine with Ray's
own ``ray.cluster_utils.Cluster``: a head without CPUs and two worker nodes of one CPU each, so
two 1-CPU replicas can only run one per worker node (checked from the process table).
tritonclient's HTTP client drives a closed-loop load with colour photos, through the head's
proxy and through the worker nodes' proxies, while a worker node holding a replica is removed.
Every 200 must be the answer plain onnxruntime gives for that photo, answers must go on after
the removal, and the few failures must be protocol errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resnext_deploy.artifact import Manifest
from resnext_deploy.preprocess import preprocess
from tests.photos import colour_photos
from tests.serve.running import free_port, serving

pytest.importorskip("ray.serve", reason="the serve tests need the [serve] extra")
aio = pytest.importorskip("tritonclient.http.aio", reason="the serve tests need the [test] extra")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException

pytestmark = pytest.mark.slow

MODEL = "resnext14_8x4d"
CLIENTS = 8  # half through the head's proxy, half through the worker nodes'
BEFORE_S = 6.0  # load before the removal
AFTER_S = 8.0  # load after the removed node's processes are gone
# What a removal may fail: the requests in flight on the lost replica (answered with an error
# by the head's proxy) or through the lost node's proxy (connections cut), at most one per
# client, and a few more sent before the proxies learn of the loss.
MAX_FAILURES = 2 * CLIENTS


@dataclass(frozen=True)
class Answer:
    photo: int
    proxy: str  # "head" or "worker": the port the request went to
    sent: float  # seconds since the load started
    done: float
    status: int | None  # None: no HTTP answer (the connection was lost)
    right: bool = False  # a 200 whose logits are onnxruntime's for this photo
    error_body: str | None = None  # a failed answer's body when it is not {"error": "..."}
    detail: str = ""  # why it failed, for the test's report


@dataclass(frozen=True)
class Site:
    cluster: Any
    port: int  # the head node's proxy (serve --port): it routes to the replicas on any node
    worker_port: int  # the worker nodes' proxies (sharing it): each tries its node's replica first


@pytest.fixture
def site(monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """Head with 0 CPUs, two worker nodes with 1 CPU each, started as docs/serving.md tells
    operators: with the proxy callback in their environment. On one machine the proxies would
    share one port (SO_REUSEPORT) and the kernel would pick which one a client reaches; Ray's
    per-node port puts the worker nodes' proxies on a port of their own, so the load goes
    through both kinds on purpose."""
    from ray.cluster_utils import Cluster

    from resnext_deploy.serve.run import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    port, worker_port = free_port(), free_port()
    monkeypatch.setenv(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
    monkeypatch.setenv("RAY_SERVE_WORKER_PROXY_HTTP_PORT", str(worker_port))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(2):
            made.add_node(num_cpus=1)
        made.wait_for_nodes()
        yield Site(made, port, worker_port)
    finally:
        made.shutdown()


def _raylet(node: Any) -> int:
    return int(node.all_processes["raylet"][0].process.pid)


def replica_nodes(cluster: Any) -> dict[int, Any]:
    """Each model replica's process id -> the cluster node whose raylet is its ancestor, read
    from the process table (not from Ray or the code under test). Ray titles a replica's
    process ``ray::ServeReplica:<app>:<deployment>`` (``.<method>`` while it runs one)."""
    import psutil

    raylets = {_raylet(n): n for n in [cluster.head_node, *cluster.worker_nodes]}
    title = f"ray::ServeReplica:{MODEL}:{MODEL}"
    found = {}
    for process in psutil.process_iter(["cmdline"]):
        first = (process.info["cmdline"] or [""])[0]
        if first != title and not first.startswith(title + "."):
            continue
        owners = [raylets[p.pid] for p in process.parents() if p.pid in raylets]
        if owners:
            found[process.pid] = owners[0]
    return found


def _two_replicas(cluster: Any, log: Path) -> dict[int, Any]:
    """The two replicas' placement, once both processes are titled (a few seconds at most)."""
    deadline = time.monotonic() + 30
    while len(placed := replica_nodes(cluster)) != 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(placed) == 2, (placed, log.read_text()[-3000:])
    return placed


def reference(export: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The photos as one-image model inputs, and plain onnxruntime's logits for each."""
    import onnxruntime as ort

    spec = Manifest.read(export).spec
    inputs = [preprocess([rgb], spec) for rgb in colour_photos().values()]
    session = ort.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return inputs, np.concatenate([session.run(["logits"], {name: x})[0] for x in inputs])


async def drive(
    site: Site, inputs: list[np.ndarray], expected: np.ndarray, remove: Any
) -> tuple[list[Answer], float, float]:
    """``CLIENTS`` closed-loop clients send the photos in turn, alternately to the head's and
    the worker nodes' proxies; after ``BEFORE_S`` seconds ``remove()`` runs in a thread, and
    the load goes on ``AFTER_S`` seconds after it returned. Returns the answers and when the
    removal started and ended (seconds since the load started)."""
    clients = {
        name: aio.InferenceServerClient(f"127.0.0.1:{port}", conn_limit=CLIENTS, conn_timeout=30)
        for name, port in (("head", site.port), ("worker", site.worker_port))
    }
    start = time.perf_counter()
    stop_at = float("inf")
    answers: list[Answer] = []

    async def one(proxy: str, photo: int) -> Answer:
        tensor = aio.InferInput("input", list(inputs[photo].shape), "FP32")
        tensor.set_data_from_numpy(inputs[photo])
        sent = time.perf_counter() - start
        try:
            logits = (await clients[proxy].infer(MODEL, [tensor])).as_numpy("logits")
        except InferenceServerException as exc:
            status = int(exc.status()) if exc.status() else None
            done = time.perf_counter() - start
            return Answer(photo, proxy, sent, done, status, False, _body(exc), str(exc)[:200])
        except Exception as exc:  # noqa: BLE001 - the connection was lost: counted, not raised
            done = time.perf_counter() - start
            why = f"{type(exc).__name__}: {exc}"[:200]
            return Answer(photo, proxy, sent, done, None, detail=why)
        right = np.allclose(logits[0], expected[photo], rtol=0, atol=1e-5)
        return Answer(photo, proxy, sent, time.perf_counter() - start, 200, bool(right))

    async def worker(k: int) -> None:
        i = k
        while time.perf_counter() < stop_at:
            answers.append(await one(("head", "worker")[k % 2], i % len(inputs)))
            i += CLIENTS

    try:
        workers = asyncio.gather(*(worker(k) for k in range(CLIENTS)))
        await asyncio.sleep(BEFORE_S)
        removing = time.perf_counter() - start
        try:
            await asyncio.to_thread(remove)
        finally:
            removed = time.perf_counter() - start
            stop_at = time.perf_counter() + AFTER_S
            await workers
    finally:
        for client in clients.values():
            await client.close()
    return answers, removing, removed


def _body(exc: Any) -> str | None:
    """None when tritonclient found ``{"error": "..."}`` in the body; else the body it read."""
    if exc.debug_details() is not None:
        return str(exc.debug_details())
    if exc.message() == "client received an empty response from the server.":
        return ""
    return None


def test_a_lost_worker_node_fails_few_requests_and_the_other_replica_answers_on(
    tiny_export: Path, site: Site, tmp_path: Path
) -> None:
    cluster = site.cluster
    # A batch wait keeps requests inside the replicas: the removal finds some in flight there.
    command = [
        sys.executable, "-m", "resnext_deploy", "serve", str(tiny_export),
        "--address", cluster.address, "--replicas", "2", "--cpus-per-replica", "1",
        "--threads", "1", "--host", "127.0.0.1", "--port", str(site.port),
        "--max-batch-size", "4", "--batch-wait-ms", "50", "--no-access-log",
    ]  # fmt: skip
    inputs, expected = reference(tiny_export)
    log = tmp_path / "serve.log"
    with serving(command, log, os.environ | {"RAY_ADDRESS": ""}) as proc:
        placed = _two_replicas(cluster, log)
        nodes = {id(n) for n in placed.values()}
        assert len(nodes) == 2 and id(cluster.head_node) not in nodes, placed
        lost, survivor = placed.values()

        answers, removing, removed = asyncio.run(
            drive(site, inputs, expected, lambda: cluster.remove_node(lost))
        )
        # The other replica answered alone: a replacement finds no free CPU.
        assert list(replica_nodes(cluster).values()) == [survivor]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]

    ok = [a for a in answers if a.status == 200]
    failed = [a for a in answers if a.status != 200]
    summary = (
        f"{len(answers)} sent, {len(ok)} 200s, {len(failed)} failed: "
        + ", ".join(f"{a.proxy} {a.status or 'no answer'} ({a.detail})" for a in failed[:8])
        + f"; removal from {removing:.2f} s to {removed:.2f} s"
    )
    print(summary)
    assert all(a.right for a in ok), [a for a in ok if not a.right][:3]
    assert {a.proxy for a in ok if a.done < removing} == {"head", "worker"}, summary
    # Answers go on after the removal through both proxies, and the last seconds all succeed.
    assert {a.proxy for a in ok if a.sent > removed} == {"head", "worker"}, summary
    assert sum(a.sent > removed for a in ok) >= 10, summary
    end = max(a.done for a in answers)
    assert all(a.status == 200 for a in answers if a.sent > end - 3.0), summary
    assert len(failed) <= MAX_FAILURES, summary
    # A failed answer that has an HTTP status carries the protocol's error body.
    bodies = [a.error_body for a in failed if a.status is not None and a.error_body is not None]
    assert not bodies, (summary, [json.dumps(b)[:300] for b in bodies])
