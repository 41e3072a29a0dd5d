"""What is inside an exported file: metadata, I/O, opset, op counts, Conv groups, parameters."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from resnext_deploy.artifact import open_model_file
from resnext_deploy.errors import ArtifactError
from resnext_deploy.spec import SPEC_KEY
from resnext_deploy.validate import parse_json, regular_file


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | str]


@dataclass
class ModelInfo:
    path: str
    format: str
    metadata: dict[str, Any]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    op_counts: dict[str, int]
    conv_groups: dict[int, int]
    parameters: int
    opset: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect_file(path: str | Path) -> ModelInfo:
    """Describe an ``.onnx`` or TorchScript ``.pt`` file, or an export directory's ONNX file.
    A file of an export is checked against its manifest first (see
    :func:`~resnext_deploy.artifact.open_model_file`). Raises :class:`ArtifactError`."""
    path, _ = open_model_file(path)
    if not path.exists():
        raise ArtifactError(f"no such file: {path}")
    regular_file(path, "model file", ArtifactError)
    if path.suffix == ".onnx":
        return _inspect_onnx(path)
    if path.suffix in (".pt", ".pth", ".ts", ".torchscript"):
        return _inspect_torchscript(path)
    raise ArtifactError(f"{path}: expected an .onnx or TorchScript .pt file")


def _inspect_onnx(path: Path) -> ModelInfo:
    import onnx

    if path.stat().st_size == 0:
        raise ArtifactError(f"{path} is empty (0 bytes), not an ONNX model")
    try:
        # external data stays unread: a crafted location could name any file on the machine
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have no common type
        raise ArtifactError(f"{path} is not a readable ONNX model ({exc})") from None
    if not proto.graph.node:  # protobuf parses many non-ONNX byte strings as an empty model
        raise ArtifactError(f"{path} holds no ONNX graph: it is not an ONNX model")

    def tensors(values: Any) -> list[TensorInfo]:
        return [
            TensorInfo(
                v.name,
                _dtype_name(v.type.tensor_type.elem_type),
                [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            )
            for v in values
        ]

    ops = Counter(n.op_type for n in proto.graph.node)
    groups: Counter[int] = Counter()
    for node in proto.graph.node:
        if node.op_type in ("Conv", "QLinearConv"):
            groups[next((a.i for a in node.attribute if a.name == "group"), 1)] += 1
    params = sum(_initializer_elements(t, path) for t in proto.graph.initializer)
    metadata = {p.key: p.value for p in proto.metadata_props if p.key != SPEC_KEY}
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return ModelInfo(
        str(path),
        "onnx",
        metadata,
        tensors(proto.graph.input),
        tensors(proto.graph.output),
        dict(ops.most_common()),
        dict(sorted(groups.items())),
        params,
        opset,
        {"ir_version": proto.ir_version, "producer": proto.producer_name},
    )


def _dtype_name(elem_type: int) -> str:
    """numpy's name for an ONNX element type (``float32``), or ONNX's own for one numpy lacks."""
    from onnx import TensorProto, helper

    try:
        return str(helper.tensor_dtype_to_np_dtype(elem_type).name)
    except (KeyError, ValueError, TypeError):
        names = TensorProto.DataType.values()
        return TensorProto.DataType.Name(elem_type).lower() if elem_type in names else "unknown"


# Bits per element of the types numpy stores in a whole byte but ONNX packs.
_PACKED_BITS = {"UINT4": 4, "INT4": 4, "FLOAT4E2M1": 4, "UINT2": 2, "INT2": 2}
_PACKED_BITS |= {"FLOAT6E2M3": 6, "FLOAT6E3M2": 6}
_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")


def _initializer_elements(tensor: Any, path: Path) -> int:
    """How many values the initializer ``tensor`` declares, once its data is seen to hold them:
    a 100000 x 100000 declaration over 4 bytes of data is a corrupt file, not 10^10 parameters
    (and converting it to an array would fail). External data is counted as declared."""
    from onnx import TensorProto, helper

    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise ArtifactError(f"{path}: initializer {tensor.name!r} has negative dimensions {dims}")
    count = math.prod(dims)
    if tensor.data_location == TensorProto.EXTERNAL:
        return count
    if tensor.raw_data:
        try:
            bits = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize * 8
        except (KeyError, ValueError, TypeError):
            raise ArtifactError(
                f"{path}: initializer {tensor.name!r} has an unknown data type {tensor.data_type}"
            ) from None
        kind = TensorProto.DataType.Name(tensor.data_type)
        held = len(tensor.raw_data) * 8 // _PACKED_BITS.get(kind, bits)
    else:
        fields = [tensor.string_data, *(getattr(tensor, f) for f in _TYPED_FIELDS)]
        held = max(len(f) for f in fields)
    if held < count:
        shape = " x ".join(map(str, dims))
        raise ArtifactError(
            f"{path}: initializer {tensor.name!r} declares {shape} values but holds data for "
            f"{held}: the file is corrupt"
        )
    return count


def _inspect_torchscript(path: Path) -> ModelInfo:
    from resnext_deploy.artifact import TORCHSCRIPT_SPEC_EXTRA as SPEC_EXTRA
    from resnext_deploy.artifact import TORCHSCRIPT_VERSIONS_EXTRA as VERSIONS_EXTRA
    from resnext_deploy.runtime.torch_runners import load_torchscript

    module, extra = load_torchscript(path)
    graph = module.inlined_graph if hasattr(module, "inlined_graph") else module.graph
    ops: Counter[str] = Counter()
    groups: Counter[int] = Counter()
    for node in graph.nodes():
        kind = node.kind()
        if kind.startswith("aten::"):
            ops[kind] += 1
        if kind in ("aten::conv2d", "aten::_convolution"):
            group_input = list(node.inputs())[6 if kind == "aten::conv2d" else 8]
            value: Any = group_input.toIValue()
            groups[int(value) if value is not None else -1] += 1
    params = sum(int(t.numel()) for t in module.state_dict().values())
    params += sum(
        int(cast(Any, n.output().toIValue()).numel())
        for n in graph.nodes()
        if n.kind() == "prim::Constant" and n.output().type().kind() == "TensorType"
    )
    metadata: dict[str, Any] = {}
    for key, extra_file in (("spec", SPEC_EXTRA), ("versions", VERSIONS_EXTRA)):
        if extra.get(extra_file):
            what = f"{extra_file} in {path}"
            metadata[key] = parse_json(extra[extra_file], what, ArtifactError)
    inputs = [TensorInfo(i.debugName(), "float32", []) for i in list(graph.inputs())[1:]]
    return ModelInfo(
        str(path),
        "torchscript",
        metadata,
        inputs,
        [TensorInfo("output", "float32", [])],
        dict(ops.most_common()),
        dict(sorted(groups.items())),
        params,
    )
