"""Deployment variants of an exported fp32 ONNX model: fp16, int8 (static QDQ) and a graph with
the preprocessing inside.

Each variant is written next to ``model.onnx`` with the same metadata plus ``precision`` /
``input_format`` entries, and is listed in the manifest like any other artifact.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnext_deploy.artifact import Precision  # re-exported for the API
from resnext_deploy.errors import ConfigError, ExportError, first_line
from resnext_deploy.spec import ModelSpec

FP16_MAX = 65504.0
# Reductions and the classifier accumulate many terms: fp16 loses most there, so they stay fp32.
FP16_KEEP_FP32 = ["ReduceMean", "GlobalAveragePool", "Gemm", "Softmax"]



def parse_precisions(text: str) -> tuple[Precision, ...]:
    """``"fp16,int8"`` -> (FP32, FP16, INT8): fp32 is always exported, the others derive from it."""
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    valid = {p.value for p in Precision}
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise ConfigError(f"--precision takes {', '.join(sorted(valid))}, not {text!r}")
    return tuple(p for p in Precision if p.value in names or p is Precision.FP32)


@dataclass(frozen=True)
class Int8Result:
    calibration_images: int
    held_out_images: int
    top1_agreement: float
    fp32_ms: float
    int8_ms: float
    fp32_bytes: int
    int8_bytes: int

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.int8_ms


def _copy_metadata(src: Any, dst: Any, extra: dict[str, str]) -> None:
    props = {p.key: p.value for p in src.metadata_props} | extra
    del dst.metadata_props[:]
    for key, value in props.items():
        entry = dst.metadata_props.add()
        entry.key, entry.value = key, value
    dst.producer_name = src.producer_name
    dst.doc_string = src.doc_string


def _save_checked(model: Any, path: Path) -> None:
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
    _copy_metadata(model, converted, {"precision": "fp16"})
    _save_checked(converted, dst)


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


class _ArrayReader:
    """onnxruntime ``CalibrationDataReader`` over a float32 NCHW array, in small batches."""

    def __init__(self, input_name: str, data: np.ndarray, batch: int = 8) -> None:
        self.input_name = input_name
        self._batches: Iterator[np.ndarray] = iter(
            [data[i : i + batch] for i in range(0, len(data), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}


def export_int8(
    src: Path,
    dst: Path,
    calibration: np.ndarray,
    held_out: np.ndarray,
    min_agreement: float = 0.99,
    threads: int | None = None,
) -> Int8Result:
    """Static QDQ quantization for the CPU provider: uint8 activations, int8 per-channel weights
    (with int8 activations onnxruntime leaves convs in fp32 and is slower than fp32 here).

    Calibrates on ``calibration`` (preprocessed float32 images), then measures top-1 agreement
    with the fp32 model on ``held_out`` images that calibration never saw, and the batch-1 speed
    of both. Raises :class:`ExportError` when agreement is below ``min_agreement``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0 or len(held_out) == 0:
        raise ConfigError("int8 needs calibration images and held-out images to check accuracy")
    with tempfile.TemporaryDirectory(prefix="resnext-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantized = Path(tmp) / "int8.onnx"
        graph = onnx.load(str(prepared)).graph
        input_name = graph.input[0].name
        # The stem conv sees raw pixels and the classifier decides the answer: both stay fp32,
        # which keeps top-1 agreement high (measured on the digits model: 94% -> 99.7%) at the
        # cost of ~3% of ResNeXt-50's MACs.
        keep = [n.name for n in graph.node if n.op_type == "Conv"][:1]
        keep += [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")]
        quantize_static(
            str(prepared),
            str(quantized),
            _ArrayReader(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=keep,
        )
        model = onnx.load(str(quantized))
        _copy_metadata(
            onnx.load(str(src), load_external_data=False),
            model,
            {
                "precision": "int8",
                "calibration_images": str(len(calibration)),
                "fp32_nodes": ",".join(keep),
            },
        )
        _save_checked(model, quantized)
        agreement, fp32_ms, int8_ms = _compare_int8(src, quantized, held_out, threads)
        if agreement < min_agreement:
            raise ExportError(
                f"int8 top-1 agreement with fp32 is {agreement:.2%} on {len(held_out)} held-out "
                f"images, below the required {min_agreement:.2%}; calibrate on more "
                "representative images or keep fp32"
            )
        quantized.replace(dst)
    return Int8Result(
        len(calibration),
        len(held_out),
        agreement,
        fp32_ms,
        int8_ms,
        src.stat().st_size,
        dst.stat().st_size,
    )


def _compare_int8(
    fp32: Path, int8: Path, images: np.ndarray, threads: int | None
) -> tuple[float, float, float]:
    from resnext_deploy.runtime.ort import OrtRunner
    from resnext_deploy.runtime.providers import SessionConfig
    from resnext_deploy.timing import Timing, measure

    config = SessionConfig(intra_op_threads=threads)
    a, b = OrtRunner(fp32, config), OrtRunner(int8, config)
    pa = np.concatenate([a.infer(images[i : i + 32]) for i in range(0, len(images), 32)])
    pb = np.concatenate([b.infer(images[i : i + 32]) for i in range(0, len(images), 32)])
    agreement = float((pa.argmax(1) == pb.argmax(1)).mean())
    one = images[:1]
    timing = Timing(warmup=3, min_iters=10, min_time_s=0.5, max_time_s=5.0)
    # Interleave two rounds so that both models see the same machine state.
    t_a, t_b = [], []
    for _ in range(2):
        t_a.append(measure(lambda: a.infer(one), lambda: None, timing, 1)[1].p50_ms)
        t_b.append(measure(lambda: b.infer(one), lambda: None, timing, 1)[1].p50_ms)
    return agreement, float(np.median(t_a)), float(np.median(t_b))


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
                input_names=["image"],
                output_names=["logits", "probabilities"],
                dynamic_shapes={"image": {0: torch.export.Dim("batch")}},
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
    _save_checked(proto, dst)
