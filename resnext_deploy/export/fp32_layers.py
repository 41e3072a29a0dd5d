"""Which layers of an int8 model stay fp32, and why: the output layer, every convolution class
that int8 runs slower than fp32 on this machine, and the fewest layers, ranked by the error each
adds, that bring top-1 agreement with fp32 above the gate. :mod:`resnext_deploy.export.quantize`
quantizes and measures; the choices are made here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

QUANTIZABLE = ("Conv", "Gemm")
SPEED_MARGIN = 0.1
SPEED_FLOOR_MS = 0.05


@dataclass(frozen=True)
class ClassSpeed:
    """One convolution class, profiled in fp32 and in int8 (ms per call, summed over the batch
    sizes profiled)."""

    conv_class: str
    nodes: int
    fp32_ms: float
    int8_ms: float

    @property
    def int8_slower(self) -> bool:
        """Slower by more than :data:`SPEED_MARGIN` and :data:`SPEED_FLOOR_MS`: closer than that
        is profiler noise, and int8 wins the tie (smaller file)."""
        excess = self.int8_ms - self.fp32_ms
        return excess > self.fp32_ms * SPEED_MARGIN and excess > SPEED_FLOOR_MS


@dataclass(frozen=True)
class Fp32Layer:
    node: str
    module: str
    reason: str


def module_names(graph: Any) -> dict[str, str]:
    """Node name -> module path, from the folded weights' names (``layer2.0.conv2.weight``)."""
    names = {}
    for node in graph.node:
        if (
            node.op_type in QUANTIZABLE
            and len(node.input) > 1
            and node.input[1].endswith(".weight")
        ):
            names[node.name] = node.input[1][: -len(".weight")]
    return names


def output_layers(graph: Any, layers: list[str], modules: dict[str, str]) -> dict[str, Fp32Layer]:
    """The quantizable ``layers`` that produce the graph's outputs. The classifier produces the
    logits: quantized, they are clipped to the calibrated range (images unlike the calibration
    set lose their ranking), for ~0.1% of the MACs."""
    outputs = {o.name for o in graph.output}
    return {
        n.name: Fp32Layer(n.name, modules.get(n.name, n.name), "output layer: logits stay fp32")
        for n in graph.node
        if n.name in layers and set(n.output) & outputs
    }


def conv_classes(graph: Any) -> dict[str, str]:
    """Node name -> convolution class (``group=32 3x3``) for every Conv of ``graph``."""
    from onnx import helper

    from resnext_deploy.runtime.profiling import conv_class

    classes = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kernel = tuple(int(k) for k in attrs.get("kernel_shape", ()))
        cls = conv_class("Conv", int(attrs.get("group", 1)), kernel)
        if cls is not None:
            classes[node.name] = cls
    return classes


def measure_class_speeds(
    fp32: Path, int8: Path, input_size: int, batch_sizes: tuple[int, ...], threads: int | None
) -> tuple[ClassSpeed, ...]:
    """Profile both graphs and set their convolution classes side by side."""
    from resnext_deploy.runtime.profiling import profile_model
    from resnext_deploy.runtime.providers import SessionConfig

    config = SessionConfig(intra_op_threads=threads)
    rng = np.random.default_rng(0)
    a: dict[str, float] = {}
    b: dict[str, float] = {}
    counts: dict[str, int] = {}
    for size in batch_sizes:
        batch = rng.standard_normal((size, 3, input_size, input_size), dtype=np.float32)
        pa = profile_model(fp32, batch, config, runs=10, warmup=3)
        pb = profile_model(int8, batch, config, runs=10, warmup=3)
        for cls, ms in pa.conv_ms().items():
            a[cls] = a.get(cls, 0.0) + ms
        for cls, ms in pb.conv_ms().items():
            b[cls] = b.get(cls, 0.0) + ms
        for node in pa.nodes:
            if node.conv_class is not None and size == batch_sizes[0]:
                counts[node.conv_class] = counts.get(node.conv_class, 0) + 1
    return tuple(ClassSpeed(c, counts.get(c, 0), a[c], b[c]) for c in sorted(a) if c in b)


def slow_class_layers(
    speeds: tuple[ClassSpeed, ...], classes: dict[str, str], modules: dict[str, str]
) -> dict[str, Fp32Layer]:
    """Every convolution (``classes``: node -> its class) of a class that runs slower in int8,
    with the two times as the reason."""
    slow = {s.conv_class: s for s in speeds if s.int8_slower}
    layers = {}
    for node, cls in classes.items():
        if cls in slow:
            s = slow[cls]
            layers[node] = Fp32Layer(
                node,
                modules.get(node, node),
                f"speed: {cls} convolutions take {s.int8_ms:.2f} ms in int8 and "
                f"{s.fp32_ms:.2f} ms in fp32 here",
            )
    return layers


def rank_layers(
    fp32: Path, int8: Path, images: np.ndarray, candidates: list[str]
) -> list[tuple[str, str, float]]:
    """Quantized layers (node names in ``candidates``) as (node, module, added relative error),
    most harmful first."""
    import onnx

    from resnext_deploy.artifact import Variant
    from resnext_deploy.localize import compare_activations, find_boundaries, onnx_activations

    boundaries = find_boundaries(onnx.load(str(fp32)))
    ref, missing_ref = onnx_activations(fp32, boundaries, images)
    out, missing = onnx_activations(int8, boundaries, images)
    loc = compare_activations(
        "int8", "fp32", boundaries, ref, out, Variant.INT8.tolerance, missing_ref | missing
    )
    errors = {layer.name: layer.added for layer in loc.layers}
    ranked = [
        (b.node, b.name, errors[b.name])
        for b in boundaries
        if b.node in candidates and b.name in errors
    ]
    return sorted(ranked, key=lambda item: -item[2])


def fewest_fp32_layers(
    ranked: list[str], passes: Callable[[list[str]], tuple[bool, float]], limit: int
) -> tuple[int, list[tuple[int, float]]]:
    """Smallest ``k <= limit`` with ``passes(ranked[:k])``: doubling, then bisection (agreement
    grows, mostly, with the layers kept). Returns (k, the (k, agreement) pairs tried); k is -1
    when even ``limit`` layers do not pass."""
    tried: list[tuple[int, float]] = []

    def check(k: int) -> bool:
        ok, agreement = passes(ranked[:k])
        tried.append((k, agreement))
        return ok

    low, k = 0, 1
    while k < limit and not check(k):
        low, k = k, k * 2
    if k >= limit:
        k = limit
        if not check(k):
            return -1, tried
    high = k
    while high - low > 1:
        mid = (low + high) // 2
        if check(mid):
            high = mid
        else:
            low = mid
    return high, tried


def accuracy_layers(ranked: list[tuple[str, str, float]]) -> dict[str, Fp32Layer]:
    """The chosen top of :func:`rank_layers`, each with the error it adds as the reason."""
    return {
        node: Fp32Layer(node, module, f"accuracy: adds {err:.2g} relative error")
        for node, module, err in ranked
    }
