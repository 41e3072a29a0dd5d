"""Deployment variants of an exported fp32 ONNX model: fp16 and a graph with the preprocessing
inside (int8 is in :mod:`resnext_deploy.export.quantize`).

Each variant is written next to ``model.onnx`` with the same metadata plus ``precision`` /
``input_format`` entries, and is listed in the manifest like any other artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resnext_deploy.artifact import (
    BATCH_AXIS,
    IMAGE_INPUT_NAME,
    OUTPUT_NAME,
    PROBABILITIES_NAME,
)
from resnext_deploy.artifact import Precision as Precision  # re-exported for the API
from resnext_deploy.errors import ExportError, first_line
from resnext_deploy.spec import ModelSpec

FP16_MAX = 65504.0
# Reductions and the classifier accumulate many terms: fp16 loses most there, so they stay fp32.
FP16_KEEP_FP32 = ["ReduceMean", "GlobalAveragePool", "Gemm", "Softmax"]


def copy_metadata(src: Any, dst: Any, extra: dict[str, str]) -> None:
    props = {p.key: p.value for p in src.metadata_props} | extra
    del dst.metadata_props[:]
    for key, value in props.items():
        entry = dst.metadata_props.add()
        entry.key, entry.value = key, value
    dst.producer_name = src.producer_name
    dst.doc_string = src.doc_string


def save_checked(model: Any, path: Path) -> None:
    import onnx

    onnx.save_model(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path.name} fails onnx.checker: {exc}") from None


def export_fp16(src: Path, dst: Path) -> None:
    """Convert weights and activations to fp16, keeping float32 inputs/outputs (callers do not
    change) and :data:`FP16_KEEP_FP32` operators in fp32. Refuses a model whose weights exceed
    the fp16 range; activation overflow shows up as Inf/NaN in the parity check."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype == np.float32 and values.size and np.abs(values).max() > FP16_MAX:
            raise ExportError(
                f"weight {init.name!r} reaches {np.abs(values).max():.3g}, beyond fp16's "
                f"{FP16_MAX:g}: this model overflows in fp16; deploy it in fp32"
            )
    converted = convert_float_to_float16(
        onnx.load(str(src)), keep_io_types=True, op_block_list=FP16_KEEP_FP32
    )
    _topological_sort(converted.graph)  # the converter appends its input Casts at the end
    del converted.graph.value_info[:]  # stale fp32 shapes; the checker re-infers them
    copy_metadata(model, converted, {"precision": "fp16"})
    save_checked(converted, dst)


def _topological_sort(graph: Any) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ExportError("the fp16 graph has a cycle or a dangling input")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def export_with_preprocessing(model: Any, spec: ModelSpec, dst: Path, opset: int) -> None:
    """ONNX model taking uint8 RGB images ``[N, S, S, 3]`` (already resized to the input size)
    that casts, scales, normalises and transposes inside the graph, and returns ``logits`` and
    ``probabilities``. An embedder then needs no knowledge of the normalisation."""
    import torch

    from resnext_deploy.environment import package_versions
    from resnext_deploy.export.onnx_export import quiet_exporter, set_metadata
    from resnext_deploy.models.with_preprocessing import PreprocessAndClassify

    wrapper = PreprocessAndClassify(model, spec).eval()
    example = torch.randint(0, 256, (2, spec.input_size, spec.input_size, 3), dtype=torch.uint8)
    with quiet_exporter():
        try:
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                external_data=False,
                opset_version=opset,
                input_names=[IMAGE_INPUT_NAME],
                output_names=[OUTPUT_NAME, PROBABILITIES_NAME],
                dynamic_shapes={IMAGE_INPUT_NAME: {0: torch.export.Dim(BATCH_AXIS)}},
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
            raise ExportError(
                f"exporting the preprocessing graph failed: {first_line(exc)}"
            ) from None
    if program is None:
        raise ExportError("exporting the preprocessing graph returned no program")
    proto = program.model_proto
    set_metadata(proto, spec, package_versions())
    entry = proto.metadata_props.add()
    entry.key, entry.value = "input_format", "uint8 NHWC RGB, resized to input_size"
    save_checked(proto, dst)
