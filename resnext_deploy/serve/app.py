"""The Ray Serve application: one deployment per model, each replica holding one onnxruntime
session, requests batched with ``@serve.batch``; HTTP through ``__call__``, gRPC through one
method per RPC of Triton's ``GRPCInferenceService`` (Serve's gRPC proxy calls them by name).
Each replica times its inference requests for Triton's statistics extension; with several
replicas, a small second deployment sums them (:mod:`~resnext_deploy.serve.statstore`).

``build_app`` is an application builder: ``resnext-deploy serve`` calls it, and so does
``serve deploy`` with the config file ``resnext-deploy serve --write-config`` writes
(``import_path: resnext_deploy.serve.app:build_app``, the settings under ``args``).

Inference runs on one worker thread per replica, so the replica's event loop keeps reading and
validating requests (and forming the next batch) while a batch runs; with batching off each
request runs alone, in arrival order. The histogram ``resnext_deploy_batch_images`` (exported
as ``ray_resnext_deploy_batch_images``) records the images in every onnxruntime call, with
batching on or off; Ray's own ``serve_actual_batch_size`` counts the same for batched calls.
Ray rebuilds a histogram's ``_sum`` from bucket midpoints, so it is approximate: the counter
``resnext_deploy_images`` divided by the histogram's ``_count`` is the exact mean batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

from resnext_deploy.artifact import Manifest
from resnext_deploy.serve.config import ServeConfig
from resnext_deploy.serve.grpc_protocol import GrpcInferenceAPI
from resnext_deploy.serve.grpc_service import GENERATED_NAME  # noqa: F401 - its import names the messages
from resnext_deploy.serve.model import ServedModel
from resnext_deploy.serve.protocol import RequestError
from resnext_deploy.serve.proxy import keep_replica_server_on_node
from resnext_deploy.serve.routes import HttpRequest, HttpResponse, InferenceAPI
from resnext_deploy.serve.stats import RequestTiming
from resnext_deploy.serve.statstore import ReplicaStatistics, StatisticsStore
from resnext_deploy.serve.uploads import ClientGone, read_body

BATCH_BUCKETS = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 128.0, 256.0]
CONSTRUCTOR_RETRIES = 2  # a broken export fails the deployment fast instead of 20 times over


def _images_in(batches: list[np.ndarray]) -> int:
    return sum(len(b) for b in batches)


def is_inference(path: str) -> bool:
    """An inference request, counted by the statistics extension: infer or classify."""
    return path.rstrip("/").rsplit("/", 1)[-1] in ("infer", "classify")


@dataclass(frozen=True)
class BatchRun:
    """When the model run a request's images were part of started and ended (monotonic ns)."""

    started: int
    ended: int


Answer = tuple[dict[str, np.ndarray], BatchRun]


@dataclass
class Outcome:
    """A request being answered: its clock readings, and whether it succeeded."""

    timing: RequestTiming = field(default_factory=RequestTiming)
    ok: bool = False


def _rpc(name: str) -> Any:
    """A replica method answering the gRPC call ``name``: Ray Serve's gRPC proxy calls the
    method named after the RPC, with the request message and Serve's gRPC context."""

    async def answer(self: ModelServer, request: Any, grpc_context: Any) -> Any:
        async with self._counted(name == "ModelInfer") as outcome:
            response = await self.grpc_api.handle(name, request, grpc_context)
            outcome.ok = not grpc_context.code()
        return response

    answer.__name__ = answer.__qualname__ = name
    return answer


@serve.deployment
class ModelServer:
    """One replica: the model, its HTTP and gRPC APIs and the batcher."""

    # Triton's GRPCInferenceService (tritonclient.grpc.service_pb2_grpc), as far as it is served.
    ServerLive = _rpc("ServerLive")
    ServerReady = _rpc("ServerReady")
    ServerMetadata = _rpc("ServerMetadata")
    ModelReady = _rpc("ModelReady")
    ModelMetadata = _rpc("ModelMetadata")
    ModelConfig = _rpc("ModelConfig")
    ModelInfer = _rpc("ModelInfer")
    ModelStatistics = _rpc("ModelStatistics")

    def __init__(self, args: dict[str, Any], store: DeploymentHandle | None = None) -> None:
        keep_replica_server_on_node()
        self.config = ServeConfig.from_args(args)
        self.model = ServedModel(self.config)
        self.model.warm_up()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
        self.batch_images = Histogram(
            "resnext_deploy_batch_images",
            description="Images in each onnxruntime call a replica made (batches formed).",
            boundaries=BATCH_BUCKETS,
            tag_keys=("model",),
        )
        self.batch_images.set_default_tags({"model": self.model.name})
        self.images = Counter(
            "resnext_deploy_images",
            description="Images a replica ran through onnxruntime.",
            tag_keys=("model",),
        )
        self.images.set_default_tags({"model": self.model.name})
        self.stats = ReplicaStatistics(self.model.name, store)
        # @serve.batch's documented setters (its type hints do not declare them).
        self._batched.set_max_batch_size(self.config.max_batch_size)  # type: ignore[attr-defined]
        self._batched.set_batch_wait_timeout_s(self.config.batch_wait_ms / 1000)  # type: ignore[attr-defined]
        self._idle = asyncio.Event()
        self._idle.set()
        self.api = InferenceAPI(
            self.model, self._infer, self.config.max_image_pixels, self.stats.total
        )
        self.grpc_api = GrpcInferenceAPI(self.model, self._infer, self.stats.total)

    async def __call__(self, request: Request) -> Response:
        config = self.config
        try:
            body = await read_body(
                request.scope, request.receive, config.max_body_bytes, config.body_timeout_s
            )
        except RequestError as exc:
            answer = HttpResponse.error(exc.status, str(exc))
        except ClientGone:
            return Response(b"", status_code=400)  # nobody reads it; no traceback in the log
        else:
            http = HttpRequest(
                request.method,
                request.url.path,
                body,
                {k.lower(): v for k, v in request.headers.items()},
                dict(request.query_params),
            )
            async with self._counted(is_inference(http.path)) as outcome:
                answer = await self.api.handle(http)
                outcome.ok = answer.status == 200
        return Response(answer.body, status_code=answer.status, headers=answer.headers)

    @asynccontextmanager
    async def _counted(self, inference: bool) -> AsyncIterator[Outcome]:
        """Time one request for the statistics extension (inference requests only)."""
        outcome = Outcome()
        token = self.stats.current.set(outcome.timing)
        try:
            yield outcome
        finally:
            self.stats.current.reset(token)
            if inference:
                self.stats.counts.request_done(outcome.timing, outcome.ok)
                self.stats.changed()

    async def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        called = time.monotonic_ns()
        if self.config.batching:
            outputs, run = await self._gated(batch)
        else:
            (outputs, run), *_ = await self._run([batch])
        timing = self.stats.current.get()
        if timing is not None:
            timing.ran(called, run.started, run.ended, len(batch))
        return outputs

    async def _gated(self, batch: np.ndarray) -> Answer:
        # While onnxruntime is busy, requests wait here; when it is free they all enter the
        # batcher together and form the next batch. Ray's batcher alone cuts a batch every
        # batch-wait interval, busy or not, and would queue many small batches behind a long
        # one (Triton's dynamic batcher also forms a batch when an instance becomes free).
        await self._idle.wait()
        return await self._batched(batch)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, batch_size_fn=_images_in)
    async def _batched(self, batches: list[np.ndarray]) -> list[Answer]:
        self._idle.clear()
        try:
            return await self._run(batches)
        finally:
            self._idle.set()

    async def _run(self, batches: list[np.ndarray]) -> list[Answer]:
        started = time.monotonic_ns()
        stacked = batches[0] if len(batches) == 1 else np.concatenate(batches)
        self.batch_images.observe(len(stacked))
        self.images.inc(len(stacked))
        loop = asyncio.get_running_loop()
        computing = time.monotonic_ns()
        outputs = await loop.run_in_executor(self.executor, self.model.run, stacked)
        computed = time.monotonic_ns()
        ends = np.cumsum([len(b) for b in batches])
        answers = [
            {name: value[end - len(b) : end] for name, value in outputs.items()}
            for b, end in zip(batches, ends, strict=True)
        ]
        ended = time.monotonic_ns()
        self.stats.counts.batch_ran(
            len(stacked), computing - started, computed - computing, ended - computed
        )
        run = BatchRun(computing, computed)
        return [(answer, run) for answer in answers]

    def __del__(self) -> None:
        executor = getattr(self, "executor", None)  # absent when the constructor failed early
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def deployment_name(config: ServeConfig) -> str:
    """The model's name (and its deployment's): as configured, else from the manifest."""
    return config.name_for(Manifest.read(config.export_dir).spec.arch)


def deployment_options(config: ServeConfig) -> dict[str, Any]:
    """The options of the model's deployment (also written into the Serve config file)."""
    return {
        "name": deployment_name(config),
        "num_replicas": config.replicas,
        "max_ongoing_requests": config.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": config.cpus_per_replica, "num_gpus": config.num_gpus},
        "max_constructor_retry_count": CONSTRUCTOR_RETRIES,
        "logging_config": {"enable_access_log": config.access_log},
    }


def build_app(args: dict[str, Any]) -> Application:
    """Application builder: ``args`` as :meth:`ServeConfig.to_args` writes them. The model's
    deployment, and with several replicas the one that sums their statistics."""
    config = ServeConfig.from_args(args)
    deployment = ModelServer.options(**deployment_options(config))  # type: ignore[attr-defined]
    if config.replicas == 1:  # its counts are the whole
        return deployment.bind(config.to_args())
    store = StatisticsStore.options(name=f"{deployment_name(config)}-statistics")  # type: ignore[attr-defined]
    return deployment.bind(config.to_args(), store.bind())
