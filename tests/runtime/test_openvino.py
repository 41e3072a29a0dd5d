"""The OpenVINO engine against independent references: plain onnxruntime on the same files, the
ONNX graph read with onnx for which layers are quantized, and colour photos preprocessed by
torchvision."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from resnext_deploy.artifact import Variant
from resnext_deploy.errors import ArtifactError, ConfigError
from resnext_deploy.recommendation import Engine
from resnext_deploy.runtime.engines import open_runner
from resnext_deploy.runtime.openvino import OpenVinoConfig, OpenVinoRunner, openvino_cause
from resnext_deploy.runtime.providers import Provider, SessionConfig
from tests.photos import colour_photos

pytest.importorskip("openvino")


def _plain(path: Path, batch: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})


def _torchvision_batch(size: int, mean: list[float], std: list[float]) -> np.ndarray:
    """The colour photos through torchvision's transforms: the reference preprocessing."""
    import torch
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    return torch.stack([tf(Image.fromarray(im)) for im in colour_photos().values()]).numpy()


def test_fp32_on_openvino_equals_plain_onnxruntime_on_colour_photos(tiny_every_variant: Path):
    spec = OpenVinoRunner(tiny_every_variant / Variant.FP32.file).embedded_spec()
    batch = _torchvision_batch(spec.input_size, list(spec.mean), list(spec.std))
    path = tiny_every_variant / Variant.FP32.file
    with OpenVinoRunner(path, OpenVinoConfig(threads=2)) as runner:
        got = runner.infer(batch)
        bound = runner.bind(batch[:3])
        bound.run()
        again = bound.fetch()
    want = _plain(path, batch)[0]
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-5 * scale
    assert np.abs(again - want[:3]).max() <= 1e-5 * scale
    assert (got.argmax(1) == want.argmax(1)).all()


def test_every_output_of_the_preprocessing_graph_equals_onnxruntime(tiny_every_variant: Path):
    path = tiny_every_variant / Variant.PREPROCESS.file
    runner = OpenVinoRunner(path)
    side = runner.inputs[0].shape[1]
    images = np.stack(
        [im[:side, :side] for im in colour_photos().values() if min(im.shape[:2]) >= side]
    )
    got = runner.run_outputs(images)
    want = _plain(path, images)
    assert [o.name for o in runner.outputs] == ["logits", "probabilities"]
    assert runner.input_type == "tensor(uint8)"
    for g, w in zip(got, want, strict=True):
        assert np.abs(g - w).max() <= 1e-5 * max(1.0, np.abs(w).max())


def _quantized_convs(graph: onnx.GraphProto) -> tuple[set[str], set[str]]:
    """(quantized, other) Conv node names: a Conv whose weight comes out of a DequantizeLinear is
    a quantized one."""
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type in ("Conv", "FusedConv")]
    quantized = {n.name for n in convs if n.input[1] in dequantized}
    return quantized, {n.name for n in convs} - quantized


def _unquantize_one_conv(path: Path, out: Path) -> str:
    """A copy of the int8 file with one quantized convolution given its weights back in fp32
    (dequantized by hand): a file where only some convolutions are int8."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    conv = next(
        n for n in graph.node
        if n.op_type == "Conv" and producers.get(n.input[1], n).op_type == "DequantizeLinear"
    )  # fmt: skip
    dq = producers[conv.input[1]]
    q, scale, zero = (inits[name] for name in dq.input[:3])
    shape = (-1,) + (1,) * (q.ndim - 1)
    weights = (q.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape)
    graph.initializer.append(numpy_helper.from_array(weights, conv.name + "_fp32_weight"))
    conv.input[1] = conv.name + "_fp32_weight"
    onnx.save(model, str(out))
    return conv.name


def test_the_int8_file_runs_its_quantized_convolutions_in_int8(tiny_every_variant: Path):
    """OpenVINO's runtime model is read for which layers run in int8; the reference is the ONNX
    graph read with onnx."""
    path = tiny_every_variant / Variant.INT8.file
    quantized, kept = _quantized_convs(onnx.load(str(path)).graph)
    assert quantized
    layers = OpenVinoRunner(path).layer_precisions()
    assert layers.int8_convs == len(quantized)
    assert layers.other_convs == len(kept)
    assert {name.split("/")[0] for name in layers.int8} == quantized
    fp32 = OpenVinoRunner(tiny_every_variant / Variant.FP32.file).layer_precisions()
    assert fp32.int8_convs == 0 and fp32.other_convs == len(quantized | kept)


def test_a_file_with_some_convolutions_in_fp32_is_counted_layer_by_layer(
    tiny_every_variant: Path, tmp_path: Path
):
    mixed = tmp_path / "mixed.onnx"
    name = _unquantize_one_conv(tiny_every_variant / Variant.INT8.file, mixed)
    quantized, kept = _quantized_convs(onnx.load(str(mixed)).graph)
    assert name in kept and quantized
    layers = OpenVinoRunner(mixed).layer_precisions()
    assert (layers.int8_convs, layers.other_convs) == (len(quantized), len(kept))
    assert {n.split("/")[0] for n in layers.int8} == quantized
    assert name in {n.split("/")[0] for n in layers.other}


def test_a_wrong_input_type_or_shape_is_refused_not_converted(tiny_every_variant: Path):
    runner = OpenVinoRunner(tiny_every_variant / Variant.PREPROCESS.file)
    side = runner.inputs[0].shape[1]
    with pytest.raises(ConfigError, match="uint8"):
        runner.infer(np.zeros((1, side, side, 3), np.float32))
    with pytest.raises(ConfigError, match="shape"):
        runner.infer(np.zeros((1, side + 1, side, 3), np.uint8))


def test_a_file_openvino_cannot_read_is_one_message_naming_it(tmp_path: Path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a protobuf at all" * 50)
    with pytest.raises(ArtifactError) as caught:
        OpenVinoRunner(bad)
    message = str(caught.value)
    assert str(bad) in message and "OpenVINO" in message
    assert "src/" not in message and "\n" not in message  # no C++ source locations
    with pytest.raises(ArtifactError, match="in-memory"):
        OpenVinoRunner(b"\x08\x01garbage")


def test_openvino_cause_keeps_the_reason_and_drops_source_locations():
    raw = RuntimeError(
        "Exception from src/inference/src/cpp/core.cpp:105:\n"
        "Check 'm_model->ParseFromIstream(&model_file)' failed at src/frontends/onnx/x.cpp:563:\n"
        "FrontEnd API failed with GeneralFailure:\nModel can't be parsed\n"
    )
    assert openvino_cause(raw) == "Model can't be parsed"


def test_the_spec_inside_is_read_and_checked_against_the_manifest(tiny_every_variant: Path):
    from resnext_deploy.artifact import open_artifact

    spec = open_artifact(tiny_every_variant).spec
    runner = OpenVinoRunner(tiny_every_variant / Variant.INT8.file)
    assert runner.embedded_spec(spec) == spec
    other = type(spec).from_dict(spec.to_dict() | {"class_names": list("abcdefg")})
    with pytest.raises(ArtifactError, match="differs from its export's manifest"):
        runner.embedded_spec(other)


def test_model_bytes_run_as_the_file_does(tiny_every_variant: Path):
    path = tiny_every_variant / Variant.INT8.file
    batch = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    assert np.array_equal(
        OpenVinoRunner(path.read_bytes()).infer(batch), OpenVinoRunner(path).infer(batch)
    )


def test_openvino_with_a_gpu_provider_is_refused_not_ignored(tiny_every_variant: Path):
    with pytest.raises(ConfigError, match="OpenVINO engine runs on the CPU"):
        open_runner(
            tiny_every_variant / "model.onnx",
            Engine.OPENVINO,
            SessionConfig(provider=Provider.CUDA),
        )


def test_without_the_package_the_error_names_the_extra(
    tiny_every_variant: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(ConfigError, match=r"resnext-deploy\[openvino\]"):
        open_runner(tiny_every_variant / "model.onnx", Engine.OPENVINO)


def test_the_compiled_model_is_on_the_cpu_device_with_fp32_and_the_threads_asked(
    tiny_every_variant: Path,
):
    runner = OpenVinoRunner(tiny_every_variant / "model.onnx", OpenVinoConfig(threads=1))
    info = runner.describe()
    assert info["openvino_device"] == "CPU"
    assert runner.compiled.get_property("EXECUTION_DEVICES") == ["CPU"]
    assert info["inference_precision"] == "f32" and info["inference_threads"] == 1


def test_a_copied_export_file_still_runs(tiny_every_variant: Path, tmp_path: Path):
    """OpenVINO reads the file itself (no side files): a copy anywhere runs the same."""
    copy = tmp_path / "elsewhere.onnx"
    shutil.copy(tiny_every_variant / "model.onnx", copy)
    batch = np.ones((1, 3, 64, 64), np.float32)
    assert np.array_equal(
        OpenVinoRunner(copy).infer(batch),
        OpenVinoRunner(tiny_every_variant / "model.onnx").infer(batch),
    )


def test_the_export_records_which_layers_openvino_runs_in_int8(tiny_every_variant: Path):
    """As it records onnxruntime's: parity.json's int8 section, counted again from the graph."""
    import json

    recorded = json.loads((tiny_every_variant / "parity.json").read_text())["int8"]["openvino"]
    quantized, kept = _quantized_convs(onnx.load(str(tiny_every_variant / Variant.INT8.file)).graph)
    assert (recorded["int8_convs"], recorded["other_convs"]) == (len(quantized), len(kept))


def test_ctrl_c_after_several_runners_is_an_interrupt_not_a_crash(tiny_every_variant: Path):
    """Each ``openvino.Core`` swaps the thread's alternate signal stack and swaps it back when
    destroyed; two destroyed out of order left it on freed memory and SIGINT then ended the
    process with SIGSEGV. Runners share one Core."""
    import subprocess

    code = (
        "import faulthandler, os, signal, time, numpy as np\n"
        "faulthandler.enable()  # an alternate signal stack of its own, as under pytest\n"
        "from resnext_deploy.runtime.openvino import OpenVinoRunner\n"
        f"path = {str(tiny_every_variant / 'model.onnx')!r}\n"
        "batch = np.ones((1, 3, 64, 64), np.float32)\n"
        "first, second = OpenVinoRunner(path), OpenVinoRunner(open(path, 'rb').read())\n"
        "first.infer(batch), second.infer(batch)\n"
        "del first  # the first made is the first gone: not the reverse order\n"
        "del second\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(10)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "interrupted", done.stderr[-2000:]
