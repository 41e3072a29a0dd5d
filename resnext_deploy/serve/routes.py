"""The HTTP API of a served model, independent of the web server that carries it.

Open Inference Protocol (KServe v2), as Triton serves it::

    GET  /v2                                    server metadata
    GET  /v2/health/live | /v2/health/ready     200 when live / ready
    GET  /v2/models/<name>[/versions/1]         model metadata: tensor names, datatypes, shapes
    GET  /v2/models/<name>[/versions/1]/ready   200 when the model is ready
    GET  /v2/models/<name>[/versions/1]/config  Triton's model configuration (JSON form)
    GET  /v2/models[/<name>[/versions/1]]/stats Triton's statistics extension
    POST /v2/models/<name>[/versions/1]/infer   inference, JSON or binary tensors

and one endpoint of our own::

    POST /models/<name>/classify?top_k=5        JPEG/PNG bytes -> top-k labels, probabilities

Errors are ``{"error": "..."}`` with a 4xx status (the form tritonclient reads); a request that
fails validation never reaches the model.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from resnext_deploy import __version__
from resnext_deploy.serve.images import decode_image
from resnext_deploy.serve.model import ServedModel
from resnext_deploy.serve.protocol import (
    BINARY_HEADER,
    RequestError,
    encode_infer_response,
    json_bytes,
    parse_infer_request,
)
from resnext_deploy.serve.stats import ModelStatistics

Infer = Callable[[np.ndarray], Awaitable[dict[str, np.ndarray]]]
Statistics = Callable[[], Awaitable[ModelStatistics]]
EXTENSIONS = ["binary_tensor_data", "classification", "statistics"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})

    @classmethod
    def json(cls, data: object, status: int = 200) -> HttpResponse:
        """Strict JSON (:func:`json_bytes`: NaN or infinity is a 500 with a JSON body)."""
        return cls(status, json_bytes(data))

    @classmethod
    def error(cls, status: int, message: str) -> HttpResponse:
        return cls.json({"error": message}, status)


class InferenceAPI:
    """Routes requests for one model; ``infer`` runs a validated input batch (batched or not,
    as the server decides) and returns every output of the model; ``statistics`` gives the
    model's counts (summed over replicas, as the server decides)."""

    def __init__(
        self,
        model: ServedModel,
        infer: Infer,
        max_image_pixels: int,
        statistics: Statistics | None = None,
    ) -> None:
        self.model = model
        self.infer = infer
        self.max_image_pixels = max_image_pixels
        self.statistics = statistics

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer ``request``; never raises (errors become 4xx/5xx responses)."""
        try:
            return await self._route(request)
        except RequestError as exc:
            return HttpResponse.error(exc.status, str(exc))
        except Exception as exc:  # noqa: BLE001 - the server must keep serving; the log has it
            log.exception("request %s %s failed", request.method, request.path)
            return HttpResponse.error(500, f"internal error: {type(exc).__name__}: {exc}")

    async def _route(self, request: HttpRequest) -> HttpResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts[:1] == ["v2"]:
            return await self._v2(request, parts[1:])
        if len(parts) == 3 and parts[0] == "models" and parts[2] == "classify":
            check_model(self.model.name, parts[1])
            _allow(request, "POST")
            return await self._classify(request)
        raise RequestError(404, f"no such endpoint: {request.path}")

    async def _v2(self, request: HttpRequest, parts: list[str]) -> HttpResponse:
        if not parts:
            _allow(request, "GET")
            return HttpResponse.json(
                {"name": "resnext-deploy", "version": __version__, "extensions": EXTENSIONS}
            )
        if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
            _allow(request, "GET")
            return HttpResponse(200, b"", {})
        if parts[0] != "models" or len(parts) < 2:
            raise RequestError(404, f"no such endpoint: {request.path}")
        if parts[1:] == ["stats"]:  # every model's: this server has one
            _allow(request, "GET")
            return await self._stats()
        rest, version = parts[2:], ""
        if rest[:1] == ["versions"]:
            version, rest = (rest[1] if len(rest) > 1 else "none"), rest[2:]
        check_model(self.model.name, parts[1], version)
        if not rest:
            _allow(request, "GET")
            return HttpResponse.json(self.model.metadata())
        if rest == ["ready"]:
            _allow(request, "GET")
            return HttpResponse(200, b"", {})
        if rest == ["config"]:
            _allow(request, "GET")
            return HttpResponse.json(self.model.triton_config())
        if rest == ["stats"]:
            _allow(request, "GET")
            return await self._stats()
        if rest == ["infer"]:
            _allow(request, "POST")
            return await self._infer(request)
        raise RequestError(404, f"no such endpoint: {request.path}")

    async def _infer(self, request: HttpRequest) -> HttpResponse:
        _identity_encoding(request)
        model = self.model
        parsed = parse_infer_request(
            request.body,
            request.headers.get(BINARY_HEADER.lower()),
            model.input,
            model.output_names,
            model.max_batch_size,
        )
        outputs = await self.infer(parsed.array)
        body, headers = encode_infer_response(model.name, parsed, outputs, model.labels)
        return HttpResponse(200, body, headers)

    async def _stats(self) -> HttpResponse:
        counts = await self.statistics() if self.statistics is not None else ModelStatistics()
        return HttpResponse.json({"model_stats": [counts.to_dict(self.model.name)]})

    async def _classify(self, request: HttpRequest) -> HttpResponse:
        _identity_encoding(request)
        top_k = _top_k(request.query.get("top_k", "5"), len(self.model.labels))
        rgb = decode_image(request.body, self.max_image_pixels, self.model.spec)
        outputs = await self.infer(self.model.image_rows(rgb))
        prediction = self.model.top_k(outputs, "upload", top_k)
        return HttpResponse.json(
            {"model_name": self.model.name, "top": prediction.to_dict()["top"]}
        )


def check_model(served: str, name: str, version: str = "") -> None:
    """Raise :class:`RequestError` (404) unless ``name`` is the ``served`` model and
    ``version`` is its one version, ``"1"`` (``""``: the latest, as in Triton)."""
    if name != served:
        raise RequestError(404, f"unknown model {name!r}; this server has {served!r}")
    if version not in ("", "1"):
        raise RequestError(404, f"model {served!r} has only version 1")


def _allow(request: HttpRequest, method: str) -> None:
    if request.method != method:
        raise RequestError(405, f"{request.path} takes {method}, not {request.method}")


def _identity_encoding(request: HttpRequest) -> None:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RequestError(
            415, f"Content-Encoding {encoding!r} is not accepted; send it uncompressed"
        )


def _top_k(text: str, classes: int) -> int:
    try:
        k = int(text)
    except ValueError:
        k = 0
    if not 1 <= k <= classes:
        raise RequestError(400, f"top_k must be an integer in 1..{classes}, got {text!r}")
    return k
