"""A live smoke test on a tiny built-in ResNeXt, built with ``onnx.helper`` (no torch): a stem
conv, one bottleneck block with a grouped 3x3 conv and its residual Add, global average pooling
and a Gemm classifier. On the chosen provider: the session with the guard, per-node placement, an
IO-bound run against a plain onnxruntime CPU session, CUDA-graph capture and replay with an
updated input (CUDA), and the fp16 variant's parity."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from resnext_deploy.artifact import FP16_TOLERANCE, FP32_TOLERANCE, Tolerance
from resnext_deploy.doctor.report import Check, CheckStatus
from resnext_deploy.errors import DeployError, first_line
from resnext_deploy.runtime.ort import OrtRunner
from resnext_deploy.runtime.placement import Placement
from resnext_deploy.runtime.providers import (
    ORT_NAMES,
    CudaOptions,
    Provider,
    SessionConfig,
    TensorRTOptions,
)

INPUT, OUTPUT = "input", "logits"
SIZE, CLASSES, WIDTH, GROUPS = 16, 5, 8, 4
BATCHES = (1, 4)


def tiny_resnext_onnx(seed: int = 0) -> bytes:
    """A checked ONNX model (opset 18, dynamic batch): input ``[batch, 3, 16, 16]`` ->
    ``logits [batch, 5]``, with 4 Conv nodes of which one is grouped (``group=4``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def weight(name: str, shape: tuple[int, ...], scale: float) -> str:
        values = (rng.standard_normal(shape) * scale).astype(np.float32)
        initializers.append(numpy_helper.from_array(values, name))
        return name

    def conv(x: str, cin: int, k: int, name: str, group: int = 1, relu: bool = True) -> str:
        fan_in = cin // group * k * k
        w = weight(f"{name}.weight", (WIDTH, cin // group, k, k), (2.0 / fan_in) ** 0.5)
        b = weight(f"{name}.bias", (WIDTH,), 0.1)
        y = f"{name}.out"
        nodes.append(
            helper.make_node(
                "Conv", [x, w, b], [y], name=name, group=group, kernel_shape=[k, k],
                pads=[k // 2] * 4,
            )
        )  # fmt: skip
        if not relu:
            return y
        nodes.append(helper.make_node("Relu", [y], [f"{name}.act"], name=f"{name}.relu"))
        return f"{name}.act"

    stem = conv(INPUT, 3, 3, "stem")
    h = conv(stem, WIDTH, 1, "layer1.0.conv1")
    h = conv(h, WIDTH, 3, "layer1.0.conv2", group=GROUPS)
    h = conv(h, WIDTH, 1, "layer1.0.conv3", relu=False)
    fc_w = weight("fc.weight", (CLASSES, WIDTH), 0.5)
    fc_b = weight("fc.bias", (CLASSES,), 0.1)
    nodes += [
        helper.make_node("Add", [h, stem], ["sum"], name="layer1.0.add"),
        helper.make_node("Relu", ["sum"], ["block"], name="layer1.0.relu"),
        helper.make_node("GlobalAveragePool", ["block"], ["pooled"], name="avgpool"),
        helper.make_node("Flatten", ["pooled"], ["features"], name="flatten"),
        helper.make_node("Gemm", ["features", fc_w, fc_b], [OUTPUT], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_resnext",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", CLASSES])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def smoke_checks(provider: Provider) -> list[Check]:
    model = tiny_resnext_onnx()
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((b, 3, SIZE, SIZE), dtype=np.float32) for b in BATCHES]
    reference = _cpu_reference(model)
    # TensorRT computes fp32 in TF32 (onnxruntime has no switch): it gets fp16's tolerance.
    tolerance = FP16_TOLERANCE if provider is Provider.TENSORRT else FP32_TOLERANCE
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="resnext-doctor-") as tmp:
        config = _config(provider, Path(tmp))
        try:
            runner = OrtRunner(model, config, name=f"onnxruntime-{provider.value}")
        except DeployError as exc:
            checks.append(_check("session", CheckStatus.FAIL, str(exc)))
            why = "no session on this provider (see the row above)"
            for name in ("placement", "IO binding", "CUDA graph", "fp16 variant"):
                checks.append(_check(name, CheckStatus.SKIP, why))
            return checks
        with runner:
            checks.append(
                _check(
                    "session",
                    CheckStatus.PASS,
                    f"{runner.session.get_providers()[0]} started in "
                    f"{runner.build.seconds * 1e3:.0f} ms with the guard",
                    build=runner.build.to_dict(),
                )
            )
            checks.append(_placement_check(runner.placement()))
            checks.append(_io_binding_check(runner, batches, reference, tolerance))
        checks.append(_cuda_graph_check(model, _config(provider, Path(tmp), cuda_graph=True),
                                        batches, reference))  # fmt: skip
        checks.append(_fp16_check(model, Path(tmp), provider, batches, reference))
    return checks


def _config(provider: Provider, folder: Path, *, cuda_graph: bool = False) -> SessionConfig:
    """TF32 off on CUDA (the comparison is about fp32); TensorRT with a profile for the smoke's
    batch sizes and its caches in ``folder`` (the user's cache is left alone)."""
    return SessionConfig(
        provider=provider,
        cuda=CudaOptions(use_tf32=False, enable_cuda_graph=cuda_graph),
        tensorrt=TensorRTOptions(batch_sizes=BATCHES, cache_dir=str(folder / "trt")),
    )


def _check(name: str, status: CheckStatus, detail: str, **data: object) -> Check:
    return Check(section="smoke", name=name, status=status, detail=detail, data=dict(data))


def _error_check(name: str, worst: float, limit: Tolerance, detail: str, **data: object) -> Check:
    """PASS when ``worst``, the largest relative error against the CPU reference, is within
    ``limit``; the row's data starts with ``max_rel=worst``."""
    status = CheckStatus.PASS if worst <= limit.max_rel else CheckStatus.FAIL
    return _check(name, status, detail, max_rel=worst, **data)


def _error_against(worst: float, tolerance: Tolerance) -> str:
    """``max rel error 1.2e-06 <= 0.0001``, the comparison as it came out."""
    ok = worst <= tolerance.max_rel
    return f"max rel error {worst:.1e} {'<=' if ok else '>'} {tolerance.max_rel:g}"


def _sizes(batches: list[np.ndarray]) -> str:
    return ", ".join(str(len(x)) for x in batches)


def _cpu_reference(model: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """A plain onnxruntime CPU session, none of resnext-deploy's code in the way."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return lambda x: session.run([OUTPUT], {INPUT: x})[0]


def _relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / max(float(np.abs(ref).max()), 1e-12))


def _placement_check(placement: Placement) -> Check:
    counts = ", ".join(f"{n} on {p}" for p, n in placement.nodes.items())
    detail = (
        f"{placement.total} nodes: {counts}; {placement.convs_on_requested} of "
        f"{placement.convs} Conv on {placement.requested}"
    )
    if placement.elsewhere:
        detail += f"; elsewhere: {placement.describe_elsewhere()}"
    status = CheckStatus.PASS if placement.ok else CheckStatus.FAIL
    return _check("placement", status, detail, placement=placement.to_dict())


def _io_binding_check(
    runner: OrtRunner,
    batches: list[np.ndarray],
    reference: Callable[[np.ndarray], np.ndarray],
    tolerance: Tolerance,
) -> Check:
    """Every batch size through the bound (device) call, run twice, then the end-to-end call
    with a changed input: each output against the CPU reference."""
    worst = 0.0
    for x in batches:
        bound = runner.bind(x)
        bound.run()
        bound.run()
        runner.sync()
        worst = max(worst, _relative_error(bound.fetch(), reference(x)))
        e2e = runner.bind_end_to_end(-x)
        if e2e is not None:
            e2e.run()
            runner.sync()
            worst = max(worst, _relative_error(e2e.fetch(), reference(-x)))
    paths = "bound" + (" and end-to-end" if runner.device != "cpu" else "") + " calls"
    detail = f"{paths} at batch {_sizes(batches)} equal a plain CPU session: "
    detail += _error_against(worst, tolerance)
    return _error_check("IO binding", worst, tolerance, detail, tolerance=tolerance.max_rel)


def _cuda_graph_check(
    model: bytes,
    config: SessionConfig,
    batches: list[np.ndarray],
    reference: Callable[[np.ndarray], np.ndarray],
) -> Check:
    provider = config.provider
    if provider is not Provider.CUDA:
        why = (
            "CUDA graphs are a CUDA-provider feature"
            if provider is Provider.CPU
            else "resnext-deploy does not use CUDA graphs with TensorRT"
        )
        return _check("CUDA graph", CheckStatus.SKIP, why)
    worst = 0.0
    try:
        with OrtRunner(model, config) as runner:
            for x in batches:  # one graph per batch shape, in one session
                for _ in range(3):  # warm-up runs, then capture
                    runner.infer(x)
                for replay in (x, -x, 2 * x):  # replays must see the in-place update
                    worst = max(worst, _relative_error(runner.infer(replay), reference(replay)))
            # back to the first shape's graph after capturing the second
            first = batches[0] * 0.5
            worst = max(worst, _relative_error(runner.infer(first), reference(first)))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types mid-run
        return _check("CUDA graph", CheckStatus.FAIL, first_line(exc))
    detail = f"captured one graph per batch size ({_sizes(batches)}) in one session; replays "
    detail += f"with updated inputs: max rel error {worst:.1e}"
    return _error_check("CUDA graph", worst, FP32_TOLERANCE, detail)


def _fp16_check(
    model: bytes,
    folder: Path,
    provider: Provider,
    batches: list[np.ndarray],
    reference: Callable[[np.ndarray], np.ndarray],
) -> Check:
    from resnext_deploy.export.variants import export_fp16

    src, dst = folder / "tiny.onnx", folder / "tiny.fp16.onnx"
    src.write_bytes(model)
    try:
        export_fp16(src, dst)
        with OrtRunner(dst, _config(provider, folder)) as runner:
            worst = max(_relative_error(runner.infer(x), reference(x)) for x in batches)
            where = runner.placement()
    except Exception as exc:  # noqa: BLE001 - conversion or session errors alike
        return _check("fp16 variant", CheckStatus.FAIL, first_line(exc))
    detail = f"converted as export does, run on {ORT_NAMES[provider]} "
    detail += f"({where.convs_on_requested} of {where.convs} Conv there): "
    detail += _error_against(worst, FP16_TOLERANCE) + " against fp32 on the CPU"
    return _error_check(
        "fp16 variant", worst, FP16_TOLERANCE, detail, tolerance=FP16_TOLERANCE.max_rel
    )
