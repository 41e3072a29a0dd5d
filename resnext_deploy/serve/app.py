"""The Ray Serve application: one deployment per model, each replica holding one onnxruntime
session, requests batched with ``@serve.batch``.

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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve
from ray.serve import Application
from ray.serve.metrics import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

from resnext_deploy.artifact import Manifest
from resnext_deploy.serve.config import ServeConfig
from resnext_deploy.serve.model import ServedModel
from resnext_deploy.serve.protocol import RequestError
from resnext_deploy.serve.routes import HttpRequest, HttpResponse, InferenceAPI
from resnext_deploy.serve.uploads import ClientGone, read_body

BATCH_BUCKETS = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 128.0, 256.0]
CONSTRUCTOR_RETRIES = 2  # a broken export fails the deployment fast instead of 20 times over


def _images_in(batches: list[np.ndarray]) -> int:
    return sum(len(b) for b in batches)


@serve.deployment
class ModelServer:
    """One replica: the model, its HTTP API and the batcher."""

    def __init__(self, args: dict[str, Any]) -> None:
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
        # @serve.batch's documented setters (its type hints do not declare them).
        self._batched.set_max_batch_size(self.config.max_batch_size)  # type: ignore[attr-defined]
        self._batched.set_batch_wait_timeout_s(self.config.batch_wait_ms / 1000)  # type: ignore[attr-defined]
        self._idle = asyncio.Event()
        self._idle.set()
        infer = self._gated if self.config.batching else self._alone
        self.api = InferenceAPI(self.model, infer, self.config.max_image_pixels)

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
            answer = await self.api.handle(
                HttpRequest(
                    request.method,
                    request.url.path,
                    body,
                    {k.lower(): v for k, v in request.headers.items()},
                    dict(request.query_params),
                )
            )
        return Response(answer.body, status_code=answer.status, headers=answer.headers)

    async def _alone(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return (await self._run([batch]))[0]

    async def _gated(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        # While onnxruntime is busy, requests wait here; when it is free they all enter the
        # batcher together and form the next batch. Ray's batcher alone cuts a batch every
        # batch-wait interval, busy or not, and would queue many small batches behind a long
        # one (Triton's dynamic batcher also forms a batch when an instance becomes free).
        await self._idle.wait()
        return await self._batched(batch)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, batch_size_fn=_images_in)
    async def _batched(self, batches: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        self._idle.clear()
        try:
            return await self._run(batches)
        finally:
            self._idle.set()

    async def _run(self, batches: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        stacked = batches[0] if len(batches) == 1 else np.concatenate(batches)
        self.batch_images.observe(len(stacked))
        self.images.inc(len(stacked))
        loop = asyncio.get_running_loop()
        outputs = await loop.run_in_executor(self.executor, self.model.run, stacked)
        ends = np.cumsum([len(b) for b in batches])
        return [
            {name: value[end - len(b) : end] for name, value in outputs.items()}
            for b, end in zip(batches, ends, strict=True)
        ]

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
    """Application builder: ``args`` as :meth:`ServeConfig.to_args` writes them."""
    config = ServeConfig.from_args(args)
    deployment = ModelServer.options(**deployment_options(config))  # type: ignore[attr-defined]
    return deployment.bind(config.to_args())
