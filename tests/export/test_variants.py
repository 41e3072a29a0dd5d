"""fp16, int8 and preprocessing-in-graph variants; the Triton repository; the Node.js example."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from resnext_deploy.errors import ArtifactError, ConfigError, ExportError
from resnext_deploy.export.calibration import CalibrationConfig
from resnext_deploy.export.manifest import MANIFEST, ONNX_FILE, open_artifact
from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
from resnext_deploy.export.variants import (
    FP16_FILE,
    INT8_FILE,
    PREPROCESS_FILE,
    Precision,
    parse_precisions,
)
from resnext_deploy.models.checkpoint import LoadOptions
from resnext_deploy.predict import Classifier
from resnext_deploy.runtime.ort import OrtRunner
from resnext_deploy.verify import VerifyConfig, verify_artifact

ROOT = Path(__file__).resolve().parents[2]
ALL = (Precision.FP32, Precision.FP16, Precision.INT8)


@pytest.fixture(scope="module")
def variants(digits_run, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    result, _ = digits_run
    out = tmp_path_factory.mktemp("variants") / "demo"
    exported = export_checkpoint(
        result.checkpoint,
        LoadOptions(),
        ExportConfig(
            out, precisions=ALL, embed_preprocess=True, calibration=CalibrationConfig("digits")
        ),
    )
    return result, exported


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


def test_verify_treats_each_variant_as_a_backend(variants) -> None:  # noqa: ANN001
    _, exported = variants
    report = verify_artifact(open_artifact(exported.out_dir), VerifyConfig(batch_sizes=(1, 4)))
    assert report.passed
    assert sum(b.backend.startswith("onnxruntime") for b in report.backends) >= 4


def test_int8_without_calibration_images_is_refused(digits_run, tmp_path: Path) -> None:  # noqa: ANN001
    result, _ = digits_run
    with pytest.raises(ConfigError, match="--calibration"):
        export_checkpoint(
            result.checkpoint,
            LoadOptions(),
            ExportConfig(tmp_path / "x", precisions=(Precision.INT8,)),
        )
    assert list(tmp_path.iterdir()) == []


def test_int8_below_the_agreement_threshold_is_refused(
    digits_run,
    tmp_path: Path,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import resnext_deploy.export.variants as variants_module

    monkeypatch.setattr(variants_module, "_compare_int8", lambda *a: (0.9, 1.0, 0.5))
    result, _ = digits_run
    with pytest.raises(ExportError, match="90.00% on 3[56][0-9] held-out"):
        export_checkpoint(
            result.checkpoint,
            LoadOptions(),
            ExportConfig(
                tmp_path / "x",
                precisions=(Precision.INT8,),
                calibration=CalibrationConfig("digits"),
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
            path, LoadOptions(), ExportConfig(tmp_path / "x", precisions=(Precision.FP16,))
        )
    assert not (tmp_path / "x").exists()


def test_parse_precisions() -> None:
    assert parse_precisions("int8") == (Precision.FP32, Precision.INT8)
    assert parse_precisions("fp16, fp32") == (Precision.FP32, Precision.FP16)
    with pytest.raises(ConfigError, match="bf16"):
        parse_precisions("bf16")


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


def test_triton_preferred_batch_sizes_from_a_bench_report(variants, tmp_path: Path) -> None:  # noqa: ANN001
    from resnext_deploy.export.triton import preferred_from_bench

    report = {
        "results": [
            {"backend": "onnxruntime-cpu", "batch_size": b, "stats": {"images_per_s": v}}
            for b, v in ((1, 100.0), (8, 400.0), (16, 390.0), (32, 380.0))
        ]
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(report))
    assert preferred_from_bench(path, max_batch_size=16) == (8, 16)


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


def test_node_example_matches_python(variants, tmp_path: Path) -> None:  # noqa: ANN001
    from PIL import Image

    example = _node_example()
    result, exported = variants
    files = []
    for i in range(8):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(result.val_images.images[i]).save(path)
        files.append(path)
    proc = subprocess.run(
        [
            "node",
            "classify.js",
            str(exported.out_dir / PREPROCESS_FILE),
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
    python = Classifier(exported.out_dir).classify(
        [result.val_images.images[i] for i in range(8)], [str(f) for f in files], top_k=3
    )
    for js, py in zip(node, python, strict=True):
        assert js["file"] == py.file
        assert [t["label"] for t in js["top"]] == list(py.labels)
        np.testing.assert_allclose(
            [t["probability"] for t in js["top"]], py.probabilities, atol=1e-5
        )


def test_node_example_rejects_a_model_without_embedded_preprocessing(variants) -> None:  # noqa: ANN001
    example = _node_example()
    _, exported = variants
    proc = subprocess.run(
        ["node", "classify.js", str(exported.out_dir / ONNX_FILE), "x.png"],
        cwd=example,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "--embed-preprocess" in proc.stderr
