"""The Open Inference Protocol (KServe v2) over gRPC, with the service definition Triton's client
ships (``tritonclient.grpc.service_pb2``): one async method per RPC, request message in,
response message out. Ray-free, so Ray Serve's gRPC proxy, a plain ``grpc.aio`` server and the
tests all run the same code.

An infer request is translated into the JSON form :func:`~.protocol.parse_request` validates, so
gRPC and HTTP refuse the same requests with the same messages; the outputs go back in
``raw_output_contents``, as Triton sends them. A refused request raises :class:`RequestError`;
:meth:`GrpcInferenceAPI.handle` turns it into a gRPC status (:func:`grpc_status`).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import grpc
import numpy as np
import tritonclient.grpc.model_config_pb2 as model_config_pb2
import tritonclient.grpc.service_pb2 as pb
from google.protobuf import json_format
from google.protobuf.message import Message

from resnext_deploy import __version__
from resnext_deploy.serve.model import ServedModel
from resnext_deploy.serve.protocol import (
    InferRequest,
    RequestError,
    bad_request,
    parse_request,
    raw_bytes,
    requested_outputs,
)
from resnext_deploy.serve.routes import EXTENSIONS, Infer, Statistics, check_model
from resnext_deploy.serve.stats import ModelStatistics

log = logging.getLogger(__name__)

# RPC name -> (method of GrpcInferenceAPI, response type): the RPCs this server answers.
RPCS: dict[str, tuple[str, type[Message]]] = {
    "ServerLive": ("server_live", pb.ServerLiveResponse),
    "ServerReady": ("server_ready", pb.ServerReadyResponse),
    "ModelReady": ("model_ready", pb.ModelReadyResponse),
    "ServerMetadata": ("server_metadata", pb.ServerMetadataResponse),
    "ModelMetadata": ("model_metadata", pb.ModelMetadataResponse),
    "ModelConfig": ("model_config", pb.ModelConfigResponse),
    "ModelInfer": ("model_infer", pb.ModelInferResponse),
    "ModelStatistics": ("model_statistics", pb.ModelStatisticsResponse),
}
# The typed-contents field that carries each datatype's values. FP16 has none in the protocol:
# its values are taken from whichever one field holds them.
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# HTTP statuses -> the codes Triton's gRPC endpoint answers with (INVALID_ARG, NOT_FOUND,
# UNAVAILABLE, UNSUPPORTED), and gRPC's own code for a message over its size limit.
GRPC_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def grpc_status(exc: RequestError) -> grpc.StatusCode:
    """The gRPC status code for a refused request (``INTERNAL`` for any status not mapped)."""
    return GRPC_STATUS.get(exc.status, grpc.StatusCode.INTERNAL)


class StatusContext(Protocol):
    """What :meth:`GrpcInferenceAPI.handle` needs of a servicer context: ``grpc.aio``'s and
    Ray Serve's ``RayServegRPCContext`` both have it."""

    def set_code(self, code: grpc.StatusCode) -> None: ...

    def set_details(self, details: str) -> None: ...


class GrpcInferenceAPI:
    """The gRPC service of one model, as :class:`~.routes.InferenceAPI` is its HTTP one:
    ``infer`` runs a validated input batch (batched or not, as the server decides) and returns
    every output of the model; ``statistics`` gives the model's counts.

    Raises ``json_format.ParseError`` when ``model.triton_config()`` does not fit Triton's
    ``ModelConfig`` message: checked once, so that a mistake there stops the replica instead
    of failing every ``ModelConfig`` call.
    """

    def __init__(
        self, model: ServedModel, infer: Infer, statistics: Statistics | None = None
    ) -> None:
        self.model = model
        self.infer = infer
        self.statistics = statistics
        self._metadata = json_format.ParseDict(model.metadata(), pb.ModelMetadataResponse())
        self._config = json_format.ParseDict(model.triton_config(), model_config_pb2.ModelConfig())

    async def handle(self, rpc: str, request: Any, context: StatusContext) -> Message:
        """The response to the RPC named ``rpc`` (``"ModelInfer"``, ...). Never raises: a
        refused request or a failing model sets ``context``'s code and details and answers an
        empty response, which is how ``grpc.aio`` and Ray Serve's gRPC proxy report errors."""
        method, response_type = RPCS[rpc]
        try:
            return await getattr(self, method)(request)
        except RequestError as exc:
            context.set_code(grpc_status(exc))
            context.set_details(str(exc))
        except Exception as exc:  # noqa: BLE001 - the server must keep serving; the log has it
            log.exception("gRPC %s failed", rpc)
            context.set_code(grpc.StatusCode.INTERNAL)
            context.set_details(f"internal error: {type(exc).__name__}: {exc}")
        return response_type()

    async def server_live(self, request: Any) -> Message:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any) -> Message:
        return pb.ServerReadyResponse(ready=True)

    async def model_ready(self, request: Any) -> Message:
        """Not ready, rather than an error, for a model or version this server does not have:
        what Triton answers, and what ``is_model_ready`` of tritonclient expects."""
        try:
            check_model(self.model.name, request.name, request.version)
        except RequestError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def server_metadata(self, request: Any) -> Message:
        return pb.ServerMetadataResponse(
            name="resnext-deploy", version=__version__, extensions=list(EXTENSIONS)
        )

    async def model_metadata(self, request: Any) -> Message:
        """Raises :class:`RequestError` (404) for another model or version."""
        check_model(self.model.name, request.name, request.version)
        response = pb.ModelMetadataResponse()
        response.CopyFrom(self._metadata)
        return response

    async def model_config(self, request: Any) -> Message:
        """Raises :class:`RequestError` (404) for another model or version."""
        check_model(self.model.name, request.name, request.version)
        return pb.ModelConfigResponse(config=self._config)

    async def model_infer(self, request: Any) -> Message:
        """Raises :class:`RequestError`: 404 for another model or version, 400 for anything
        :func:`parse_request` refuses, raw and typed inputs mixed, or typed values in the
        wrong field -- all before the model runs."""
        model = self.model
        check_model(self.model.name, request.model_name, request.model_version)
        parsed = parse_request(
            _json_form(request),
            b"".join(request.raw_input_contents),
            model.input,
            model.output_names,
            model.max_batch_size,
        )
        outputs = await self.infer(parsed.array)
        return _infer_response(model.name, parsed, outputs, model.labels)

    async def model_statistics(self, request: Any) -> Message:
        """Triton's statistics extension (zero counts without ``statistics``); an empty name
        asks for every model's. Raises :class:`RequestError` (404) for another model or
        version."""
        if request.name:
            check_model(self.model.name, request.name, request.version)
        counts = await self.statistics() if self.statistics is not None else ModelStatistics()
        entry = counts.to_dict(self.model.name)
        return json_format.ParseDict({"model_stats": [entry]}, pb.ModelStatisticsResponse())


def _json_form(request: Any) -> dict[str, Any]:
    """``request`` in the JSON form of an HTTP request: each ``raw_input_contents`` entry as
    binary data of the size it has, typed contents as ``data``."""
    raw, inputs = request.raw_input_contents, request.inputs
    if raw and any(t.contents.ListFields() for t in inputs):
        raise bad_request("send input values in raw_input_contents or in typed contents, not both")
    if raw and len(raw) != len(inputs):
        raise bad_request(
            f"raw_input_contents holds {len(raw)} tensors for {len(inputs)} inputs; "
            "send one per input"
        )
    form: dict[str, Any] = {
        "inputs": [_input_form(t, raw[i] if raw else None) for i, t in enumerate(inputs)]
    }
    if request.outputs:
        form["outputs"] = [_output_form(o) for o in request.outputs]
    if request.id:
        form["id"] = request.id
    return form


def _input_form(tensor: Any, raw: bytes | None) -> dict[str, Any]:
    form: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
    }
    if "shared_memory_region" in tensor.parameters:
        form["parameters"] = {"shared_memory_region": True}  # refused by parse_request
    elif raw is not None:
        form["parameters"] = {"binary_data_size": len(raw)}
    else:
        form["data"] = _typed_values(tensor)
    return form


def _typed_values(tensor: Any) -> list[Any]:
    """The values of a typed input, from the one field its datatype uses (no values: an empty
    list, which :func:`parse_request` refuses for its size)."""
    filled = [field.name for field, _ in tensor.contents.ListFields()]
    if not filled:
        return []
    if len(filled) > 1:
        raise bad_request(
            f"input {tensor.name!r} has values in {' and '.join(filled)}; send them in one field"
        )
    want = CONTENTS_FIELDS.get(tensor.datatype, filled[0])
    if filled[0] != want:
        raise bad_request(
            f"input {tensor.name!r} is {tensor.datatype}, whose values go in {want}, "
            f"not {filled[0]}"
        )
    return list(getattr(tensor.contents, want))


def _output_form(output: Any) -> dict[str, Any]:
    form: dict[str, Any] = {"name": output.name}
    if "classification" in output.parameters:
        form["parameters"] = {"classification": _value(output.parameters["classification"])}
    return form


def _value(parameter: Any) -> Any:
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def _infer_response(
    model_name: str, request: InferRequest, outputs: dict[str, np.ndarray], labels: list[str]
) -> Message:
    response = pb.ModelInferResponse(
        model_name=model_name, model_version="1", id=request.request_id or ""
    )
    for want, datatype, value in requested_outputs(request, outputs, labels):
        response.outputs.add(name=want.name, datatype=datatype, shape=value.shape)
        response.raw_output_contents.append(raw_bytes(value, datatype))
    return response
