"""int8 that pays: static QDQ quantization whose fp32 layers are chosen by measured speed and
measured accuracy.

Static QDQ for onnxruntime's CPU provider: uint8 activations, int8 per-channel weights (with int8
activations onnxruntime leaves convolutions in fp32 and is slower than fp32 here). Then:

1. **Speed.** The fp32 graph and the all-int8 graph are profiled (onnxruntime's profiler, time
   per convolution class such as ``group=32 3x3``). Every class that runs slower in int8 than in
   fp32 on this machine stays fp32 -- on CPUs without VNNI that is the grouped 3x3 convolution
   (measured 2.7x slower than fp32 in resnext50), while dense convolutions gain ~2x.
2. **Really fp32.** ``nodes_to_exclude`` is not enough: a convolution left in fp32 between a
   DequantizeLinear and a QuantizeLinear is quantized again at session time by onnxruntime's
   ``WeightBiasQuantization`` (per-tensor int8 weights) and fused into a ``QLinearConv``. It
   rewrites only nodes of type ``Conv`` whose output path leads to a QuantizeLinear through
   ReLU/Clip alone, so each kept convolution becomes onnxruntime's ``com.microsoft.FusedConv``
   (its ReLU folded in, as onnxruntime's own fp32 optimizer does). The optimized graph is read
   back to prove that the kept nodes run as fp32 convolutions; the file then needs onnxruntime
   (it already did: QDQ int8 is an onnxruntime CPU format here).
3. **Accuracy** (NNCF's ``quantize_with_accuracy_control`` in spirit). When top-1 agreement with
   fp32 on held-out images is below the gate, every quantized layer is ranked by the relative
   error it adds of its own (:mod:`resnext_deploy.localize`, int8 against the fp32 export on
   calibration images), and the fewest top-ranked layers are kept in fp32 that bring agreement
   above the gate (doubling, then bisection).

The chosen fp32 layers (chosen in :mod:`resnext_deploy.export.fp32_layers`), the reason for each,
the calibration method and the CPU's ISA are written to the model's metadata and returned.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnext_deploy.errors import ConfigError, ExportError
from resnext_deploy.export.calibration import CalibrationMethod
from resnext_deploy.export.fp32_layers import (
    QUANTIZABLE,
    ClassSpeed,
    Fp32Layer,
    accuracy_layers,
    conv_classes,
    fewest_fp32_layers,
    measure_class_speeds,
    module_names,
    output_layers,
    rank_layers,
    slow_class_layers,
)
from resnext_deploy.export.variants import copy_metadata, save_checked
from resnext_deploy.machine.cpu import CpuInfo, cpu_info

MS_DOMAIN = "com.microsoft"
# At most this share of the quantizable layers may be kept in fp32 to meet the accuracy gate;
# beyond it the "int8" model is mostly fp32 and the export is refused instead.
MAX_FP32_SHARE = 0.5


@dataclass(frozen=True, kw_only=True)
class Int8Config:
    """``min_agreement``: the accuracy gate (top-1 agreement with fp32 on held-out images).
    ``speed_batch_sizes``: batch sizes profiled for the per-class speed choice (empty: no speed
    choice). ``accuracy_images``: calibration images the per-layer error is measured on."""

    min_agreement: float = 0.99
    method: CalibrationMethod = CalibrationMethod.MINMAX
    speed_batch_sizes: tuple[int, ...] = (1, 8)
    accuracy_images: int = 32
    threads: int | None = None
    max_fp32_share: float = MAX_FP32_SHARE

    def __post_init__(self) -> None:
        if not 0 <= self.min_agreement <= 1:
            raise ConfigError("the int8 agreement threshold must be between 0 and 1")
        if not 0 <= self.max_fp32_share <= 1 or self.accuracy_images < 1:
            raise ConfigError("max_fp32_share must be in [0, 1] and accuracy_images >= 1")


@dataclass(frozen=True)
class Int8Result:
    calibration_images: int
    held_out_images: int
    top1_agreement: float
    fp32_bytes: int
    int8_bytes: int
    method: str = CalibrationMethod.MINMAX.value
    fp32_layers: tuple[Fp32Layer, ...] = ()
    class_speeds: tuple[ClassSpeed, ...] = ()
    int8_convs: int = 0
    fp32_convs: int = 0
    attempts: tuple[tuple[int, float], ...] = ()
    isa: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    fp32_ms: float | None = None
    int8_ms: float | None = None

    @property
    def speedup(self) -> float | None:
        return self.fp32_ms / self.int8_ms if self.fp32_ms and self.int8_ms else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"speedup": self.speedup}


class ArrayReader:
    """onnxruntime ``CalibrationDataReader`` over a float32 NCHW array, in small batches."""

    def __init__(self, input_name: str, data: np.ndarray, batch: int = 8) -> None:
        self.input_name = input_name
        self._batches: Iterator[np.ndarray] = iter(
            [data[i : i + batch] for i in range(0, len(data), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}


# --- quantizing and keeping layers in fp32 ------------------------------------------------------


def calibrate(
    prepared: Path, calibration: np.ndarray, method: CalibrationMethod, cache: Path
) -> Path:
    """Activation ranges of ``prepared`` on ``calibration``, saved to ``cache`` (onnxruntime's
    calibration cache) so that every quantization attempt reuses them.

    Calibrated here rather than inside ``quantize_static``, which cannot set histogram sizes:
    with its entropy defaults (128 bins, 128 quantized bins) the KL search has a single
    candidate, the full range, and entropy calibration equals min/max. Ranges are asymmetric
    (activations are uint8).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    methods = {
        CalibrationMethod.MINMAX: (OrtMethod.MinMax, {}),
        CalibrationMethod.ENTROPY: (
            OrtMethod.Entropy,
            {"num_bins": 2048, "num_quantized_bins": 128, "symmetric": False},
        ),
        CalibrationMethod.PERCENTILE: (
            OrtMethod.Percentile,
            {"num_bins": 2048, "percentile": 99.999, "symmetric": False},
        ),
    }
    ort_method, options = methods[method]
    input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="resnext-calib-") as tmp:
        calibrator = create_calibrator(
            Path(prepared),
            list(set(QLinearOpsRegistry) | set(QDQRegistry)),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=ort_method,
            extra_options=options,
        )
        calibrator.collect_data(ArrayReader(input_name, calibration))
        save_tensors_data(calibrator.compute_data(), cache)
    return cache


def quantize(
    prepared: Path, dst: Path, ranges: Path, method: CalibrationMethod, keep: list[str]
) -> None:
    """Static QDQ quantization of ``prepared`` with the activation ranges in ``ranges`` (see
    :func:`calibrate`) and the nodes named in ``keep`` really in fp32."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    methods = {
        CalibrationMethod.MINMAX: OrtMethod.MinMax,
        CalibrationMethod.ENTROPY: OrtMethod.Entropy,
        CalibrationMethod.PERCENTILE: OrtMethod.Percentile,
    }
    quantize_static(
        str(prepared),
        str(dst),
        None,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=methods[method],
        nodes_to_exclude=list(keep),
        calibration_cache_path=str(ranges),
    )
    model = onnx.load(str(dst))
    keep_in_fp32(model, set(keep))
    onnx.save_model(model, str(dst))


def keep_in_fp32(model: Any, names: set[str]) -> list[str]:
    """Turn each ``Conv`` in ``names`` that reads a DequantizeLinear into a
    ``com.microsoft.FusedConv`` (with its ReLU folded in when a ReLU is its only consumer), so
    that onnxruntime cannot quantize and fuse it back into a QLinearConv. Returns the nodes
    changed."""
    from onnx import helper

    graph = model.graph
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    changed, dropped = [], set()
    for node in graph.node:
        if node.name not in names or node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            continue
        source = producer.get(node.input[0])
        if source is None or source.op_type != "DequantizeLinear":
            continue  # fp32 input: nothing can quantize this convolution
        node.op_type, node.domain = "FusedConv", MS_DOMAIN
        users = consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "Relu":
            node.attribute.append(helper.make_attribute("activation", "Relu"))
            node.output[0] = users[0].output[0]
            dropped.add(id(users[0]))
        changed.append(node.name)
    if dropped:
        kept_nodes = [n for n in graph.node if id(n) not in dropped]
        del graph.node[:]
        graph.node.extend(kept_nodes)
    if changed and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return changed


def running_convs(path: Path, threads: int | None = None) -> tuple[int, int]:
    """(int8, fp32) convolutions in the graph onnxruntime's CPU provider really runs."""
    from resnext_deploy.runtime.profiling import optimized_graph
    from resnext_deploy.runtime.providers import SessionConfig

    with tempfile.TemporaryDirectory(prefix="resnext-int8-") as tmp:
        nodes = optimized_graph(path, SessionConfig(intra_op_threads=threads), Path(tmp))
    ops = [op for op, _g, _k in nodes.values()]
    int8 = sum(op in ("QLinearConv", "ConvInteger") for op in ops)
    fp32 = sum(op in ("Conv", "FusedConv", "NhwcFusedConv") for op in ops)
    return int8, fp32


# --- the export step ----------------------------------------------------------------------------


def export_int8(
    src: Path,
    dst: Path,
    calibration: np.ndarray,
    held_out: np.ndarray,
    config: Int8Config | None = None,
) -> Int8Result:
    """Quantize ``src`` (the fp32 export) to ``dst``, choosing the fp32 layers by measured speed
    and accuracy (see the module docstring). Raises :class:`ExportError` when top-1 agreement
    stays below ``config.min_agreement`` with as many fp32 layers as allowed, or when onnxruntime
    would not run the kept layers in fp32."""
    config = config or Int8Config()
    if len(calibration) == 0 or len(held_out) == 0:
        raise ConfigError("int8 needs calibration images and held-out images to check accuracy")
    isa = cpu_info()
    with tempfile.TemporaryDirectory(prefix="resnext-int8-") as tmp:
        work = Path(tmp)
        prepared = _prepare(src, work)
        keep = output_layers(prepared.graph, prepared.layers, prepared.modules)
        ranges = calibrate(prepared.path, calibration, config.method, work / "ranges.json")
        q = _Quantizer(src, prepared, ranges, work, held_out, config)
        speeds = _choose_by_speed(q, int(calibration.shape[-1]))
        keep.update(speeds.layers)
        accuracy = _choose_by_accuracy(q, keep, calibration)
        keep.update(accuracy.layers)
        _write_metadata(q, keep, len(calibration), isa)
        int8_convs, fp32_convs = _check_kept_convs_run_in_fp32(q, keep)
        fp32_ms, int8_ms = batch1_ms(src, q.candidate, held_out[:1], config.threads)
        q.candidate.replace(dst)
    return Int8Result(
        calibration_images=len(calibration),
        held_out_images=len(held_out),
        top1_agreement=accuracy.agreement,
        fp32_bytes=src.stat().st_size,
        int8_bytes=dst.stat().st_size,
        method=config.method.value,
        fp32_layers=tuple(keep.values()),
        class_speeds=speeds.speeds,
        int8_convs=int8_convs,
        fp32_convs=fp32_convs,
        attempts=accuracy.attempts,
        isa=isa.to_dict(),
        warnings=int8_warnings(isa, fp32_ms, int8_ms),
        fp32_ms=fp32_ms,
        int8_ms=int8_ms,
    )


@dataclass(frozen=True)
class _Prepared:
    """The fp32 graph after onnxruntime's quantization pre-processing (what is quantized), its
    quantizable layers and their module names."""

    path: Path
    graph: Any
    layers: list[str]
    modules: dict[str, str]


@dataclass(frozen=True)
class _Quantizer:
    """One int8 export's fixed inputs: every attempt quantizes ``prepared`` with the same
    ``ranges`` into :attr:`candidate` and measures it against ``src`` on ``held_out``."""

    src: Path
    prepared: _Prepared
    ranges: Path
    work: Path
    held_out: np.ndarray
    config: Int8Config

    @property
    def candidate(self) -> Path:
        return self.work / "int8.onnx"

    def attempt(self, keep: list[str]) -> tuple[bool, float]:
        """Quantize with the nodes in ``keep`` in fp32: (passes the gate, top-1 agreement)."""
        quantize(self.prepared.path, self.candidate, self.ranges, self.config.method, keep)
        agreement = top1_agreement(self.src, self.candidate, self.held_out, self.config.threads)
        return agreement >= self.config.min_agreement, agreement


@dataclass(frozen=True)
class _SpeedChoice:
    speeds: tuple[ClassSpeed, ...] = ()
    layers: dict[str, Fp32Layer] = field(default_factory=dict)


@dataclass(frozen=True)
class _AccuracyChoice:
    """The layers the accuracy search adds (none when the gate passes without), the final
    model's agreement and every (fp32 layers, agreement) tried."""

    layers: dict[str, Fp32Layer]
    agreement: float
    attempts: tuple[tuple[int, float], ...]


def _prepare(src: Path, work: Path) -> _Prepared:
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = work / "prepared.onnx"
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    graph = onnx.load(str(prepared), load_external_data=False).graph
    layers = [n.name for n in graph.node if n.op_type in QUANTIZABLE]
    return _Prepared(prepared, graph, layers, module_names(graph))


def _choose_by_speed(q: _Quantizer, input_size: int) -> _SpeedChoice:
    """Profile the all-int8 graph against fp32 and keep every convolution class that int8 runs
    slower (nothing when ``speed_batch_sizes`` is empty)."""
    if not q.config.speed_batch_sizes:
        return _SpeedChoice()
    everything = q.work / "all.onnx"
    quantize(q.prepared.path, everything, q.ranges, q.config.method, [])
    speeds = measure_class_speeds(
        q.src, everything, input_size, q.config.speed_batch_sizes, q.config.threads
    )
    classes = conv_classes(q.prepared.graph)
    return _SpeedChoice(speeds, slow_class_layers(speeds, classes, q.prepared.modules))


def _choose_by_accuracy(
    q: _Quantizer, keep: dict[str, Fp32Layer], calibration: np.ndarray
) -> _AccuracyChoice:
    """Quantize with the layers in ``keep``; below the gate, add the fewest of the layers that
    add the most error. Leaves :attr:`_Quantizer.candidate` holding the final model. Raises
    :class:`ExportError` when even the most layers allowed in fp32 do not reach the gate."""
    passed, agreement = q.attempt(list(keep))
    attempts = [(len(keep), agreement)]
    if passed:
        return _AccuracyChoice({}, agreement, tuple(attempts))
    layers = q.prepared.layers
    ranked = rank_layers(
        q.src,
        q.candidate,
        calibration[: q.config.accuracy_images],
        [n for n in layers if n not in keep],
    )
    limit = max(int(q.config.max_fp32_share * len(layers)) - len(keep), 0)
    k, tried = fewest_fp32_layers(
        [r[0] for r in ranked], lambda extra: q.attempt([*keep, *extra]), limit
    )
    attempts += [(len(keep) + n, a) for n, a in tried]
    if k < 0:
        best = max(a for _, a in attempts)
        raise ExportError(
            f"int8 top-1 agreement with fp32 is at most {best:.2%} on {len(q.held_out)} "
            f"held-out images, below the required {q.config.min_agreement:.2%}, even with "
            f"{len(keep) + limit} of {len(layers)} layers kept in fp32; "
            "calibrate on more representative images, try another calibration method, "
            "or keep fp32"
        )
    chosen = accuracy_layers(ranked[:k])
    _, agreement = q.attempt([*keep, *chosen])  # the final model, with exactly the chosen layers
    return _AccuracyChoice(chosen, agreement, tuple(attempts))


def _write_metadata(
    q: _Quantizer, keep: dict[str, Fp32Layer], calibration_images: int, isa: CpuInfo
) -> None:
    """The fp32 export's metadata, plus the int8 choices and the CPU they were made on."""
    import onnx

    model = onnx.load(str(q.candidate))
    copy_metadata(
        onnx.load(str(q.src), load_external_data=False),
        model,
        {
            "precision": "int8",
            "calibration_images": str(calibration_images),
            "calibration_method": q.config.method.value,
            "fp32_nodes": ",".join(keep),
            "fp32_layers": json.dumps([asdict(layer) for layer in keep.values()]),
            "cpu_isa": json.dumps(isa.to_dict()),
        },
    )
    save_checked(model, q.candidate)


def _check_kept_convs_run_in_fp32(q: _Quantizer, keep: dict[str, Fp32Layer]) -> tuple[int, int]:
    """(int8, fp32) convolutions onnxruntime runs; raises :class:`ExportError` when fewer run
    in fp32 than were kept."""
    int8_convs, fp32_convs = running_convs(q.candidate, q.config.threads)
    convs = conv_classes(q.prepared.graph)
    kept_convs = sum(1 for n in keep if n in convs)
    if fp32_convs < kept_convs:
        raise ExportError(
            f"onnxruntime runs {fp32_convs} convolutions in fp32, not the {kept_convs} "
            "chosen: it fused kept layers back into int8 kernels"
        )
    return int8_convs, fp32_convs


def int8_warnings(isa: CpuInfo, fp32_ms: float, int8_ms: float) -> tuple[str, ...]:
    notes = []
    if not isa.int8_accelerated:
        notes.append(
            f"this CPU ({isa.summary}) has no VNNI or AMX: int8 multiply-accumulates take three "
            "AVX2 instructions, so int8 gains little over fp32 here (grouped convolutions lose)"
        )
    if int8_ms >= fp32_ms:
        notes.append(
            f"int8 is not faster than fp32 on this machine ({int8_ms:.1f} ms vs {fp32_ms:.1f} ms "
            "at batch 1): deploy fp32 here, or int8 on a CPU with VNNI"
        )
    return tuple(notes)


def top1_agreement(fp32: Path, int8: Path, images: np.ndarray, threads: int | None) -> float:
    """Share of ``images`` on which both models pick the same class."""
    from resnext_deploy.runtime.ort import OrtRunner
    from resnext_deploy.runtime.providers import SessionConfig

    config = SessionConfig(intra_op_threads=threads)
    with OrtRunner(fp32, config) as a, OrtRunner(int8, config) as b:
        pa = np.concatenate([a.infer(images[i : i + 32]) for i in range(0, len(images), 32)])
        pb = np.concatenate([b.infer(images[i : i + 32]) for i in range(0, len(images), 32)])
    return float((pa.argmax(1) == pb.argmax(1)).mean())


def batch1_ms(fp32: Path, int8: Path, one: np.ndarray, threads: int | None) -> tuple[float, float]:
    """Median batch-1 latency of both models, two interleaved rounds (a sanity figure for the
    export log; the committed benchmarks are in ``benchmarks/``)."""
    from resnext_deploy.runtime.ort import OrtRunner
    from resnext_deploy.runtime.providers import SessionConfig
    from resnext_deploy.timing import Timing, measure

    config = SessionConfig(intra_op_threads=threads)
    timing = Timing(warmup=3, min_iters=10, min_time_s=0.5, max_time_s=5.0)
    t_a, t_b = [], []
    with OrtRunner(fp32, config) as a, OrtRunner(int8, config) as b:
        for _ in range(2):
            t_a.append(measure(a.bind(one).run, a.sync, timing, 1)[1].p50_ms)
            t_b.append(measure(b.bind(one).run, b.sync, timing, 1)[1].p50_ms)
    return float(np.median(t_a)), float(np.median(t_b))
