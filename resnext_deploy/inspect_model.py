"""What is inside an exported file: metadata, I/O, opset, op counts, Conv groups, parameters."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from resnext_deploy.artifact import ONNX_FILE
from resnext_deploy.errors import ArtifactError
from resnext_deploy.spec import SPEC_KEY


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
    """Describe an ``.onnx`` or TorchScript ``.pt`` file, or an export directory's ONNX file."""
    path = Path(path)
    if path.is_dir():
        path = path / ONNX_FILE
    if not path.is_file():
        raise ArtifactError(f"no such file: {path}")
    if path.suffix == ".onnx":
        return _inspect_onnx(path)
    if path.suffix in (".pt", ".pth", ".ts", ".torchscript"):
        return _inspect_torchscript(path)
    raise ArtifactError(f"{path}: expected an .onnx or TorchScript .pt file")


def _inspect_onnx(path: Path) -> ModelInfo:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    if path.stat().st_size == 0:
        raise ArtifactError(f"{path} is empty (0 bytes), not an ONNX model")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have no common type
        raise ArtifactError(f"{path} is not a readable ONNX model ({exc})") from None
    if not proto.graph.node:  # protobuf parses many non-ONNX byte strings as an empty model
        raise ArtifactError(f"{path} holds no ONNX graph: it is not an ONNX model")

    def tensors(values: Any) -> list[TensorInfo]:
        return [
            TensorInfo(
                v.name,
                helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            )
            for v in values
        ]

    ops = Counter(n.op_type for n in proto.graph.node)
    groups: Counter[int] = Counter()
    for node in proto.graph.node:
        if node.op_type in ("Conv", "QLinearConv"):
            groups[next((a.i for a in node.attribute if a.name == "group"), 1)] += 1
    params = sum(int(np.prod(numpy_helper.to_array(t).shape)) for t in proto.graph.initializer)
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
    if extra.get(SPEC_EXTRA):
        metadata["spec"] = json.loads(extra[SPEC_EXTRA])
    if extra.get(VERSIONS_EXTRA):
        metadata["versions"] = json.loads(extra[VERSIONS_EXTRA])
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
