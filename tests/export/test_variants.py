"""fp16, int8 and preprocessing-in-graph variants; the Triton repository; the Node.js example."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from resnext_deploy.artifact import MANIFEST_FILE as MANIFEST
from resnext_deploy.artifact import ONNX_FILE, Variant, open_artifact
from resnext_deploy.errors import ArtifactError, ConfigError, ExportError
from resnext_deploy.export.calibration import CalibrationConfig
from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
from resnext_deploy.export.variants import Precision
from resnext_deploy.models.checkpoint import LoadOptions
from resnext_deploy.predict import Classifier
from resnext_deploy.preprocess import resize_and_crop
from resnext_deploy.runtime.ort import OrtRunner
from resnext_deploy.spec import ModelSpec
from resnext_deploy.verify import VerifyConfig, verify_artifact
from tests.conftest import TINY
from tests.photos import colour_photos

ROOT = Path(__file__).resolve().parents[2]
FP16_FILE, INT8_FILE, PREPROCESS_FILE = (
    v.file for v in (Variant.FP16, Variant.INT8, Variant.PREPROCESS)
)
ALL = (Precision.FP32, Precision.FP16, Precision.INT8)


@pytest.fixture(scope="module")
def variants(digits_run, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    result, _ = digits_run
    out = tmp_path_factory.mktemp("variants") / "demo"
    exported = export_checkpoint(
        result.checkpoint,
        LoadOptions(),
        ExportConfig(
            out_dir=out,
            precisions=ALL,
            embed_preprocess=True,
            calibration=CalibrationConfig(source="digits"),
        ),
    )
    return result, exported


@pytest.fixture(scope="module")
def colour_export(tiny_preprocess_export: Path) -> Path:
    """The tiny model with its preprocessing graph (see tests/conftest.py: colour photos)."""
    return tiny_preprocess_export


def _plain_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _metadata_spec(path: Path) -> dict:
    """The spec as the ONNX file carries it, read with onnx alone."""
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props["resnext_deploy.spec"])


def _normalise_by_hand(images: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW, ``(x / 255 - mean) / std`` with the metadata's mean and std."""
    x = images.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _logits(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate(
        [session.run(None, {name: batch[i : i + 32]})[0] for i in range(0, len(batch), 32)]
    )


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _photo_crops(spec: dict) -> np.ndarray:
    """The colour photos resized and centre-cropped to the model's input (uint8 NHWC)."""
    model_spec = ModelSpec("photos", 1, input_size=spec["input_size"], resize=spec["resize"])
    return np.stack([resize_and_crop(p, model_spec) for p in colour_photos().values()])


def test_every_variant_is_written_verified_and_in_the_manifest(variants) -> None:  # noqa: ANN001
    _, exported = variants
    manifest = json.loads((exported.out_dir / MANIFEST).read_text())
    assert {FP16_FILE, INT8_FILE, PREPROCESS_FILE} <= set(manifest["files"])
    names = {b.backend: b for b in exported.parity.backends}
    assert {
        "onnxruntime-cpu-fp16",
        "onnxruntime-cpu-int8",
        "onnxruntime-cpu-preproc",
    } <= set(names)
    assert exported.parity.passed
    assert names["onnxruntime-cpu-fp16"].tolerance.max_rel == 1e-2
    assert names["onnxruntime-cpu-preproc"].max_rel <= 1e-4
    for filename, precision in ((FP16_FILE, "fp16"), (INT8_FILE, "int8")):
        props = {p.key: p.value for p in onnx.load(str(exported.out_dir / filename)).metadata_props}
        assert props["precision"] == precision and props["arch"] == "resnext11_mini"


def test_fp16_keeps_float32_io_and_fp32_reductions(variants) -> None:  # noqa: ANN001
    _, exported = variants
    model = onnx.load(str(exported.out_dir / FP16_FILE))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    fp16_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(fp16_weights) >= 10


def test_int8_is_gated_on_held_out_digits(variants) -> None:  # noqa: ANN001
    _, exported = variants
    q = exported.int8
    assert q is not None and q.top1_agreement >= 0.99
    assert q.held_out_images == len(variants[0].val_images) and q.calibration_images == 256
    assert q.int8_bytes < q.fp32_bytes
    ops = {n.op_type for n in onnx.load(str(exported.out_dir / INT8_FILE)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    parity = json.loads((exported.out_dir / "parity.json").read_text())
    assert parity["int8"]["top1_agreement"] == q.top1_agreement


def test_int8_agreement_is_recomputed_from_the_two_files(variants) -> None:  # noqa: ANN001
    # Independent of how the export measured it: plain onnxruntime on model.onnx and
    # model.int8.onnx, on the held-out digits, normalised by hand with the metadata's spec.
    result, exported = variants
    reported = json.loads((exported.out_dir / "parity.json").read_text())["int8"]
    n = reported["held_out_images"]
    assert n == len(result.val_images)
    spec = _metadata_spec(exported.out_dir / ONNX_FILE)
    batch = _normalise_by_hand(result.val_images.images[:n], spec)
    fp32 = _logits(_plain_session(exported.out_dir / ONNX_FILE), batch)
    int8 = _logits(_plain_session(exported.out_dir / INT8_FILE), batch)
    agreement = float((fp32.argmax(1) == int8.argmax(1)).mean())
    assert reported["top1_agreement"] == pytest.approx(agreement, abs=1e-12)
    assert exported.int8 is not None
    assert exported.int8.top1_agreement == pytest.approx(agreement, abs=1e-12)
    # On the trained digits model int8 may agree on every digit, where fp32 measured against
    # itself would look the same: the next test uses a model where the two do disagree.


def test_int8_agreement_is_recomputed_where_int8_and_fp32_disagree(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quantized file is made to disagree with fp32 on some images (noise on its classifier's
    weights after quantization, small enough for the parity gate's cosine), so a report of fp32
    measured against itself (100%) cannot pass."""
    from onnx import numpy_helper

    import resnext_deploy.export.quantize as quantize_module
    from resnext_deploy.data import load_digits

    real_quantize = quantize_module.quantize

    def quantize_then_spoil(prepared: Path, dst: Path, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        real_quantize(prepared, dst, *args, **kwargs)
        model = onnx.load(str(dst))
        fc = next(n for n in model.graph.node if n.op_type in ("Gemm", "MatMul"))
        for init in model.graph.initializer:
            if init.name in fc.input and numpy_helper.to_array(init).ndim == 2:
                w = numpy_helper.to_array(init)
                noise = np.random.default_rng(0).standard_normal(w.shape).astype(w.dtype)
                init.CopyFrom(numpy_helper.from_array(w + 0.18 * w.std() * noise, init.name))
        onnx.save_model(model, str(dst))

    monkeypatch.setattr(quantize_module, "quantize", quantize_then_spoil)
    exported = export_checkpoint(
        tiny_checkpoint,
        LoadOptions(arch=TINY),
        ExportConfig(
            out_dir=tmp_path / "tiny-int8",
            precisions=(Precision.FP32, Precision.INT8),
            calibration=CalibrationConfig(source="digits", min_agreement=0.0, max_held_out=200),
            verify=VerifyConfig(batch_sizes=(1,)),
        ),
    )
    reported = json.loads((exported.out_dir / "parity.json").read_text())["int8"]
    n = reported["held_out_images"]
    spec = _metadata_spec(exported.out_dir / ONNX_FILE)
    images = load_digits(int(spec["input_size"]), seed=0).val.images[:n]
    batch = _normalise_by_hand(images, spec)
    fp32 = _logits(_plain_session(exported.out_dir / ONNX_FILE), batch)
    int8 = _logits(_plain_session(exported.out_dir / INT8_FILE), batch)
    agreement = float((fp32.argmax(1) == int8.argmax(1)).mean())
    assert agreement < 1.0
    assert reported["top1_agreement"] == pytest.approx(agreement, abs=1e-12)


def test_fp16_runs_the_classifier_and_the_reductions_in_fp32(variants) -> None:  # noqa: ANN001
    _, exported = variants
    model = onnx.load(str(exported.out_dir / FP16_FILE))
    inferred = onnx.shape_inference.infer_shapes(model).graph
    elem_type = {
        v.name: v.type.tensor_type.elem_type
        for v in (*inferred.value_info, *inferred.input, *inferred.output)
    }
    initializers = {t.name: t for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}

    def origin(name: str) -> str:
        while name in producer and producer[name].op_type == "Cast":
            name = producer[name].input[0]
        return name

    float32 = onnx.TensorProto.FLOAT
    classifier = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    reductions = [n for n in model.graph.node if n.op_type in ("GlobalAveragePool", "ReduceMean")]
    assert classifier and reductions
    for node, data_inputs in [(n, n.input) for n in classifier] + [
        (n, n.input[:1]) for n in reductions
    ]:
        for name in data_inputs:
            if name in initializers:
                assert initializers[name].data_type == float32, (node.name, name)
                continue
            cast = producer[name]
            to = (
                next(a.i for a in cast.attribute if a.name == "to") if cast.op_type == "Cast" else 0
            )
            assert to == float32, f"{node.op_type} {node.name} reads {name} from {cast.op_type}"
            source = origin(name)
            if source in initializers:  # a weight: kept as a float32 initializer
                assert initializers[source].data_type == float32, (node.name, source)
        assert all(elem_type[out] == float32 for out in node.output), node.name
    # ...while the convolutions really are fp16.
    conv_weights = [initializers[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in conv_weights)


def test_preprocessing_in_graph_matches_the_python_path(variants) -> None:  # noqa: ANN001
    result, exported = variants
    images = result.val_images.images[:20]
    embedded = OrtRunner(exported.out_dir / PREPROCESS_FILE)
    outputs = embedded.session.run(None, {"image": images})
    logits, probs = outputs
    python = Classifier(exported.out_dir)
    np.testing.assert_allclose(probs, python.probabilities(list(images)), atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert embedded.session.get_inputs()[0].type == "tensor(uint8)"


def test_preprocessing_graph_on_colour_photos_matches_the_fp32_model(colour_export: Path) -> None:
    spec = _metadata_spec(colour_export / ONNX_FILE)
    assert len(set(spec["mean"])) == 3 and len(set(spec["std"])) == 3
    crops = _photo_crops(spec)
    # Really colour: red and blue differ by a lot on average.
    assert np.abs(crops[..., 0].astype(float) - crops[..., 2]).mean() > 10
    logits, probs = _plain_session(colour_export / PREPROCESS_FILE).run(None, {"image": crops})
    expected = _logits(_plain_session(colour_export / ONNX_FILE), _normalise_by_hand(crops, spec))
    scale = float(np.abs(expected).max())
    assert float(np.abs(logits - expected).max()) <= 1e-4 * scale
    np.testing.assert_allclose(probs, _softmax(expected), rtol=0, atol=1e-6)


def test_verify_treats_each_variant_as_a_backend(variants) -> None:  # noqa: ANN001
    _, exported = variants
    report = verify_artifact(open_artifact(exported.out_dir), VerifyConfig(batch_sizes=(1, 4)))
    assert report.passed
    assert sum(b.backend.startswith("onnxruntime") for b in report.backends) >= 4


def test_int8_without_calibration_images_is_refused(digits_run, tmp_path: Path) -> None:  # noqa: ANN001
    result, _ = digits_run
    with pytest.raises(ConfigError, match="needs real calibration images"):
        export_checkpoint(
            result.checkpoint,
            LoadOptions(),
            ExportConfig(out_dir=tmp_path / "x", precisions=(Precision.INT8,)),
        )
    assert list(tmp_path.iterdir()) == []


def test_int8_below_the_agreement_threshold_is_refused(
    digits_run,
    tmp_path: Path,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import resnext_deploy.export.quantize as quantize_module

    # Every attempt measures 90%: keeping layers in fp32 cannot reach the gate either.
    monkeypatch.setattr(quantize_module, "top1_agreement", lambda *a: 0.9)
    result, _ = digits_run
    with pytest.raises(ExportError, match="at most 90.00% on 3[56][0-9] held-out"):
        export_checkpoint(
            result.checkpoint,
            LoadOptions(),
            ExportConfig(
                out_dir=tmp_path / "x",
                precisions=(Precision.INT8,),
                calibration=CalibrationConfig(source="digits"),
            ),
        )
    assert list(tmp_path.iterdir()) == []


def test_fp16_refuses_a_model_that_overflows(digits_run, tmp_path: Path) -> None:  # noqa: ANN001
    result, _ = digits_run
    saved = torch.load(result.checkpoint, weights_only=True)
    saved["state_dict"]["fc.weight"] = saved["state_dict"]["fc.weight"] * 1e6
    path = tmp_path / "huge.pth"
    torch.save(saved, path)
    with pytest.raises(ExportError, match="overflows in fp16"):
        export_checkpoint(
            path, LoadOptions(), ExportConfig(out_dir=tmp_path / "x", precisions=(Precision.FP16,))
        )
    assert not (tmp_path / "x").exists()


def test_export_config_always_writes_fp32_first() -> None:
    assert ExportConfig(precisions=(Precision.INT8,)).precisions == (
        Precision.FP32,
        Precision.INT8,
    )
    assert ExportConfig(precisions=(Precision.INT8, Precision.FP16, Precision.FP32)).precisions == (
        Precision.FP32,
        Precision.FP16,
        Precision.INT8,
    )
    assert ExportConfig(precisions=()).precisions == (Precision.FP32,)


# --- Triton ---------------------------------------------------------------------------------


def _parse_config(path: Path):  # noqa: ANN202
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("variant", ["fp32", "preprocess"])
def test_triton_config_is_a_valid_model_config_matching_the_onnx_io(
    variants,
    tmp_path: Path,
    variant: str,  # noqa: ANN001
) -> None:
    from tritonclient.grpc import model_config_pb2

    from resnext_deploy.export.triton import TritonConfig, write_repository

    _, exported = variants
    model_dir = write_repository(
        exported.out_dir,
        tmp_path / "repo",
        TritonConfig(variant=variant, max_batch_size=64, preferred_batch_sizes=(8, 32), gpu=True),
    )
    config = _parse_config(model_dir / "config.pbtxt")
    onnx_model = onnx.load(str(model_dir / "1" / "model.onnx"))
    assert config.backend == "onnxruntime" and config.max_batch_size == 64
    graph_inputs = {i.name: i for i in onnx_model.graph.input}
    graph_outputs = {o.name: o for o in onnx_model.graph.output}
    assert [i.name for i in config.input] == list(graph_inputs)
    assert [o.name for o in config.output] == list(graph_outputs)
    for tensor in list(config.input) + list(config.output):
        value = graph_inputs.get(tensor.name) or graph_outputs[tensor.name]
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim][1:]
        assert list(tensor.dims) == dims
        elem = value.type.tensor_type.elem_type
        expected = {
            onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32,
            onnx.TensorProto.UINT8: model_config_pb2.TYPE_UINT8,
        }[elem]
        assert tensor.data_type == expected
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 32]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "cuda"
    assert accelerator.parameters["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert (model_dir / "labels.txt").read_text().split() == [str(i) for i in range(10)]


def test_triton_for_a_missing_model_or_variant(variants, tmp_path: Path) -> None:  # noqa: ANN001
    from resnext_deploy.export.triton import TritonConfig, write_repository

    with pytest.raises(ArtifactError, match="not found"):
        write_repository(tmp_path / "nope", tmp_path / "repo", TritonConfig())
    _, exported = variants
    plain = tmp_path / "plain"
    shutil.copytree(exported.out_dir, plain)
    manifest = json.loads((plain / MANIFEST).read_text())
    del manifest["files"][FP16_FILE]
    (plain / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="no fp16 variant"):
        write_repository(plain, tmp_path / "repo", TritonConfig(variant="fp16"))
    assert not (tmp_path / "repo").exists()


# --- Node.js ------------------------------------------------------------------------------------


def _node_example() -> Path:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node.js embedding example cannot run")
    example = ROOT / "examples" / "node"
    if not (example / "node_modules" / "onnxruntime-node").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed")
        proc = subprocess.run(
            [npm, "install", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=example,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            pytest.skip(f"npm install failed (no registry access?): {proc.stderr[-300:]}")
    return example


def test_node_example_matches_python_on_colour_photos(colour_export: Path, tmp_path: Path) -> None:
    example = _node_example()
    spec = _metadata_spec(colour_export / ONNX_FILE)
    crops = _photo_crops(spec)
    files = []
    for i, crop in enumerate(crops):
        path = tmp_path / f"photo{i}.png"
        Image.fromarray(crop).save(path)
        files.append(path)
    proc = subprocess.run(
        [
            "node",
            "classify.js",
            str(colour_export / PREPROCESS_FILE),
            *map(str, files),
            "--top-k",
            "3",
        ],
        cwd=example,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    node = [json.loads(line) for line in proc.stdout.splitlines()]
    # Python reference: the fp32 model fed with the normalisation done by hand.
    fp32 = _logits(_plain_session(colour_export / ONNX_FILE), _normalise_by_hand(crops, spec))
    expected = _softmax(fp32)
    assert len(node) == len(files)
    for js, path, probs in zip(node, files, expected, strict=True):
        assert js["file"] == str(path)
        top = js["top"]
        assert [t["label"] for t in top] == [spec["class_names"][t["index"]] for t in top]
        np.testing.assert_allclose(
            [t["probability"] for t in top], probs[[t["index"] for t in top]], atol=1e-5
        )
        np.testing.assert_allclose(
            [t["probability"] for t in top], np.sort(probs)[::-1][:3], atol=1e-5
        )


def test_node_example_rejects_a_model_without_embedded_preprocessing(colour_export: Path) -> None:
    example = _node_example()
    proc = subprocess.run(
        ["node", "classify.js", str(colour_export / ONNX_FILE), "x.png"],
        cwd=example,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "--embed-preprocess" in proc.stderr
