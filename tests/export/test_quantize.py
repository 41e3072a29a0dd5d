"""int8 that pays: kept layers really run in fp32, the layer choice is recorded, the accuracy
search keeps as few layers as reach the gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from resnext_deploy.artifact import ONNX_FILE, open_artifact
from resnext_deploy.export.calibration import (
    CalibrationConfig,
    CalibrationMethod,
    calibration_sets,
)
from resnext_deploy.export.fp32_layers import ClassSpeed, conv_classes
from resnext_deploy.export.quantize import (
    Int8Config,
    calibrate,
    export_int8,
    int8_warnings,
    quantize,
)
from resnext_deploy.machine.cpu import CpuInfo, parse_cpuinfo


@pytest.fixture(scope="module")
def digits(digits_run):  # noqa: ANN001, ANN201
    """The digits model's fp32 export and its (calibration, held-out) images."""
    _, exported = digits_run
    fp32 = exported.out_dir / ONNX_FILE
    calibration, held_out = calibration_sets(
        CalibrationConfig(source="digits"), open_artifact(exported.out_dir).spec
    )
    return fp32, calibration, held_out


def optimized_ops(path: Path, tmp: Path) -> list[tuple[str, int]]:
    """(op type, group) of every convolution onnxruntime's CPU provider really runs, read from
    the graph it writes with ``optimized_model_filepath`` (plain onnxruntime, not our code)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = []
    for node in onnx.load(str(tmp / "optimized.onnx")).graph.node:
        if "Conv" in node.op_type:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            ops.append((node.op_type, group))
    return ops


def prepared(fp32: Path, tmp: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmp / "prepared.onnx"
    quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)
    return out


def test_grouped_convolutions_kept_in_fp32_really_run_in_fp32(digits, tmp_path: Path) -> None:  # noqa: ANN001
    fp32, calibration, _ = digits
    prep = prepared(fp32, tmp_path)
    grouped = [n for n, cls in conv_classes(onnx.load(str(prep)).graph).items() if "group=8" in cls]
    assert len(grouped) == 3
    ranges = calibrate(prep, calibration[:32], CalibrationMethod.MINMAX, tmp_path / "ranges.json")
    quantize(prep, tmp_path / "kept.onnx", ranges, CalibrationMethod.MINMAX, grouped)
    ops = optimized_ops(tmp_path / "kept.onnx", tmp_path)
    assert not [op for op in ops if op[0] == "QLinearConv" and op[1] == 8]
    assert sum(1 for op in ops if op[0] != "QLinearConv" and op[1] == 8) == 3
    assert sum(1 for op in ops if op[0] == "QLinearConv") == 10  # every other convolution

    # The control: nodes_to_exclude alone leaves the grouped convolutions to onnxruntime, which
    # quantizes and fuses them at session time anyway.
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from resnext_deploy.export.quantize import ArrayReader

    quantize_static(
        str(prep),
        str(tmp_path / "excluded.onnx"),
        ArrayReader("input", calibration[:32]),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=grouped,
    )
    assert ("QLinearConv", 8) in optimized_ops(tmp_path / "excluded.onnx", tmp_path)


# Faked per-class timings (ms): the grouped 3x3 class clearly slower in int8, every other class
# clearly faster. Real profiles of this tiny model differ by fractions of a microsecond.
SLOW_CLASS = "group=8 3x3"
SLOW, FAST = (0.5, 2.0), (2.0, 1.0)  # (fp32 ms, int8 ms)


@pytest.fixture
def faked_speeds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """``measure_class_speeds`` replaced by the timings above, for every convolution class of
    the fp32 graph; returns the batch sizes it was asked to profile."""
    import resnext_deploy.export.quantize as quantize_module

    asked: list[tuple[int, ...]] = []

    def fake(fp32: Path, int8: Path, input_size: int, batch_sizes, threads):  # noqa: ANN001, ANN202
        asked.append(tuple(batch_sizes))
        classes = list(conv_classes(onnx.load(str(fp32)).graph).values())
        return tuple(
            ClassSpeed(c, classes.count(c), *(SLOW if c == SLOW_CLASS else FAST))
            for c in sorted(set(classes))
        )

    monkeypatch.setattr(quantize_module, "measure_class_speeds", fake)
    return asked


def test_int8_keeps_exactly_the_classes_int8_runs_slower_in_fp32(
    digits,  # noqa: ANN001
    faked_speeds: list[tuple[int, ...]],
    tmp_path: Path,
) -> None:
    fp32, calibration, held_out = digits
    dst = tmp_path / "int8.onnx"
    config = Int8Config(min_agreement=0.0, speed_batch_sizes=(1, 8))
    result = export_int8(fp32, dst, calibration, held_out, config)
    assert faked_speeds == [(1, 8)]
    grouped = [n for n, c in conv_classes(onnx.load(str(fp32)).graph).items() if c == SLOW_CLASS]
    assert len(grouped) == 3
    by_speed = {
        layer.node: layer for layer in result.fp32_layers if layer.reason.startswith("speed")
    }
    assert sorted(by_speed) == sorted(grouped)
    assert all(
        layer.reason == f"speed: {SLOW_CLASS} convolutions take 2.00 ms in int8 and 0.50 ms in "
        "fp32 here"
        for layer in by_speed.values()
    )
    # The file onnxruntime runs: the slow class in fp32, every other convolution in int8.
    ops = optimized_ops(dst, tmp_path)
    assert not [op for op in ops if op[0] == "QLinearConv" and op[1] == 8]
    assert sum(1 for op in ops if op[0] != "QLinearConv" and op[1] == 8) == 3
    assert result.fp32_convs == 3 and result.int8_convs == len(ops) - 3
    props = {p.key: p.value for p in onnx.load(str(dst)).metadata_props}
    assert set(grouped) <= set(props["fp32_nodes"].split(","))


def test_int8_keeps_no_class_when_int8_is_faster_everywhere(
    digits,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import resnext_deploy.export.quantize as quantize_module

    fp32, calibration, held_out = digits
    classes = sorted(set(conv_classes(onnx.load(str(fp32)).graph).values()))
    speeds = tuple(ClassSpeed(c, 1, *FAST) for c in classes)
    monkeypatch.setattr(quantize_module, "measure_class_speeds", lambda *_args: speeds)
    config = Int8Config(min_agreement=0.0, speed_batch_sizes=(1,))
    result = export_int8(fp32, tmp_path / "int8.onnx", calibration, held_out, config)
    assert result.class_speeds == speeds
    assert not [layer for layer in result.fp32_layers if layer.reason.startswith("speed")]
    assert result.fp32_convs == 0


def test_int8_records_its_fp32_layers_reasons_method_and_cpu(
    digits,  # noqa: ANN001
    faked_speeds: list[tuple[int, ...]],
    tmp_path: Path,
) -> None:
    fp32, calibration, held_out = digits
    dst = tmp_path / "int8.onnx"
    result = export_int8(
        fp32,
        dst,
        calibration,
        held_out,
        Int8Config(min_agreement=0.0, method=CalibrationMethod.PERCENTILE, speed_batch_sizes=(1,)),
    )
    props = {p.key: p.value for p in onnx.load(str(dst)).metadata_props}
    assert props["calibration_method"] == "percentile" and result.method == "percentile"
    layers = json.loads(props["fp32_layers"])
    assert [layer["node"] for layer in layers] == props["fp32_nodes"].split(",")
    assert {"node", "module", "reason"} <= set(layers[0])
    assert any(layer["module"] == "fc" for layer in layers)  # the logits stay fp32
    assert any(layer["reason"].startswith(f"speed: {SLOW_CLASS}") for layer in layers)
    isa = json.loads(props["cpu_isa"])
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert isa["avx2"] == (" avx2 " in f" {flags} ".replace("\n", " "))
    # What the export says runs in fp32 is what onnxruntime runs in fp32.
    ops = optimized_ops(dst, tmp_path)
    assert result.fp32_convs == sum(op[0] != "QLinearConv" for op in ops)
    assert result.int8_convs == sum(op[0] == "QLinearConv" for op in ops)


def near_ties(images: np.ndarray, count: int = 400, seed: int = 0) -> np.ndarray:
    """Blends of two digits, about half and half: inputs the model barely decides, where int8's
    rounding flips some answers whatever the training run made of the plain digits (on which a
    well-trained model's int8 can agree 359 out of 359)."""
    rng = np.random.default_rng(seed)
    a = images[rng.integers(0, len(images), count)]
    b = images[rng.integers(0, len(images), count)]
    w = rng.uniform(0.4, 0.6, size=(count, 1, 1, 1)).astype(np.float32)
    return (w * a + (1 - w) * b).astype(np.float32)


def test_the_accuracy_search_keeps_as_few_layers_as_reach_the_gate(digits, tmp_path: Path) -> None:  # noqa: ANN001
    fp32, calibration, held_out = digits
    held_out = np.concatenate([held_out, near_ties(held_out)])
    dst = tmp_path / "int8.onnx"
    plain = export_int8(
        fp32, dst, calibration, held_out, Int8Config(min_agreement=0.0, speed_batch_sizes=())
    )
    assert plain.top1_agreement < 1.0
    # A gate one more agreeing image above what int8 reaches without an accuracy choice.
    gate = plain.top1_agreement + 0.5 / len(held_out)
    config = Int8Config(min_agreement=gate, speed_batch_sizes=())
    result = export_int8(fp32, dst, calibration, held_out, config)
    chosen = [layer for layer in result.fp32_layers if layer.reason.startswith("accuracy")]
    assert chosen, "a gate above the plain int8 agreement needs at least one fp32 layer"
    # Recomputed with plain onnxruntime: the written file meets the gate ...
    assert _agreement(fp32, dst, held_out) == pytest.approx(result.top1_agreement)
    assert result.top1_agreement >= gate
    # ... and without the last layer the search chose, it does not.
    fewer = [layer.node for layer in result.fp32_layers if layer is not chosen[-1]]
    prep = prepared(fp32, tmp_path)
    ranges = calibrate(prep, calibration, config.method, tmp_path / "ranges.json")
    quantize(prep, tmp_path / "fewer.onnx", ranges, config.method, fewer)
    assert _agreement(fp32, tmp_path / "fewer.onnx", held_out) < gate


def _agreement(a: Path, b: Path, images: np.ndarray) -> float:
    sa = ort.InferenceSession(str(a), providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(str(b), providers=["CPUExecutionProvider"])
    ya = sa.run(None, {"input": images})[0]
    yb = sb.run(None, {"input": images})[0]
    return float((ya.argmax(1) == yb.argmax(1)).mean())


def test_calibration_methods_give_different_activation_ranges(digits, tmp_path: Path) -> None:  # noqa: ANN001
    fp32, calibration, _ = digits
    prep = prepared(fp32, tmp_path)
    scales = {}
    for method in CalibrationMethod:
        ranges = calibrate(prep, calibration[:64], method, tmp_path / f"{method}.json")
        quantize(prep, tmp_path / f"{method}.onnx", ranges, method, [])
        model = onnx.load(str(tmp_path / f"{method}.onnx"))
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        scales[method] = np.array(
            [float(inits[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"]
        )
    assert not np.allclose(scales[CalibrationMethod.MINMAX], scales[CalibrationMethod.ENTROPY])
    assert not np.allclose(scales[CalibrationMethod.MINMAX], scales[CalibrationMethod.PERCENTILE])
    # Percentile ignores the tails: its ranges are never wider than min/max's.
    assert (scales[CalibrationMethod.PERCENTILE] <= scales[CalibrationMethod.MINMAX] * 1.0001).all()


def test_cpu_isa_from_cpuinfo_and_the_int8_warning() -> None:
    zen3 = parse_cpuinfo("model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx avx2 fma\n")
    assert zen3.avx2 and not zen3.avx512 and not zen3.int8_accelerated
    sapphire = parse_cpuinfo("model name : Xeon\nflags : avx2 avx512f avx512_vnni amx_int8\n")
    assert (
        sapphire.avx512
        and sapphire.vnni
        and sapphire.amx
        and sapphire.summary == "AVX2+AVX-512+VNNI+AMX"
    )
    assert any("no VNNI" in w for w in int8_warnings(zen3, fp32_ms=10.0, int8_ms=8.0))
    assert any("not faster" in w for w in int8_warnings(sapphire, fp32_ms=10.0, int8_ms=12.0))
    vnni = CpuInfo(model="x", flags=frozenset({"avx2", "avx512_vnni"}))
    assert int8_warnings(vnni, 10.0, 5.0) == ()
