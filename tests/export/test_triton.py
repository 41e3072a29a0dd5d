"""The Triton repository, checked the way Triton reads it: config.pbtxt parsed into Triton's own
``ModelConfig`` protobuf (tritonclient's model_config_pb2), the ONNX file read back with onnx."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from resnext_deploy.errors import ArtifactError, ConfigError
from resnext_deploy.export.triton import TritonConfig, render_config, write_repository
from resnext_deploy.runtime.providers import CudaOptions


def _parse(path: Path):  # noqa: ANN202
    return _parse_text(path.read_text())


def _parse_text(text: str):  # noqa: ANN202
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def gpu_repo(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    return write_repository(tiny_export, out, TritonConfig(gpu=True, max_batch_size=16))


def test_logits_carry_the_label_file_the_repository_holds(gpu_repo: Path) -> None:
    config = _parse(gpu_repo / "config.pbtxt")
    (logits,) = [o for o in config.output if o.name == "logits"]
    assert logits.label_filename == "labels.txt"
    labels = (gpu_repo / logits.label_filename).read_text().split()
    assert labels == [f"c{i}" for i in range(7)] and len(labels) == logits.dims[0]


def test_gpu_config_serves_what_verify_checked_tf32_off(gpu_repo: Path) -> None:
    config = _parse(gpu_repo / "config.pbtxt")
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "cuda"
    assert accelerator.parameters["use_tf32"] == "0"
    assert accelerator.parameters["enable_cuda_graph"] == "0"
    assert json.loads((gpu_repo / "resnext_deploy.json").read_text())["cuda"]["use_tf32"] is False


def test_tf32_and_cuda_graphs_are_refused_in_a_triton_config() -> None:
    with pytest.raises(ConfigError, match="use_tf32 is refused"):
        TritonConfig(gpu=True, cuda=CudaOptions(use_tf32=True))
    with pytest.raises(ConfigError, match="enable_cuda_graph is refused"):
        TritonConfig(gpu=True, cuda=CudaOptions(use_tf32=False, enable_cuda_graph=True))
    TritonConfig(gpu=False, cuda=CudaOptions(use_tf32=True))  # CPU instances: no CUDA options


def test_warm_up_runs_zeros_at_batch_1_and_the_largest_batch(gpu_repo: Path) -> None:
    from tritonclient.grpc import model_config_pb2

    config = _parse(gpu_repo / "config.pbtxt")
    assert [w.batch_size for w in config.model_warmup] == [1, config.max_batch_size] == [1, 16]
    (model_input,) = config.input
    for warmup in config.model_warmup:
        assert list(warmup.inputs) == [model_input.name]
        data = warmup.inputs[model_input.name]
        assert list(data.dims) == list(model_input.dims) == [3, 64, 64]
        assert data.data_type == model_input.data_type == model_config_pb2.TYPE_FP32
        assert data.zero_data


def test_minimum_triton_and_onnx_versions_are_stated(gpu_repo: Path, tiny_export: Path) -> None:
    model = onnx.load(str(gpu_repo / "1" / "model.onnx"), load_external_data=False)
    opset = {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"]
    text = (gpu_repo / "config.pbtxt").read_text()
    assert "# Needs Triton 24.06 or later" in text
    assert f"ONNX IR version {model.ir_version}, opsets: ai.onnx {opset}" in text
    needs = json.loads((gpu_repo / "resnext_deploy.json").read_text())["requirements"]
    assert needs["onnx_ir_version"] == model.ir_version == 10
    assert needs["onnx_opsets"]["ai.onnx"] == opset
    assert needs["min_triton"] == "24.06" and needs["min_onnxruntime"] == "1.18"


def test_cpu_repository_needs_only_the_onnxruntime_that_reads_the_file(
    tiny_export: Path, tmp_path: Path
) -> None:
    model_dir = write_repository(tiny_export, tmp_path / "repo", TritonConfig())
    config = _parse(model_dir / "config.pbtxt")
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    assert "# Needs Triton 24.05 or later" in (model_dir / "config.pbtxt").read_text()


def test_tensor_types_are_the_server_s_datatypes_with_triton_s_prefix(tmp_path: Path) -> None:
    """Triton's config and the served model's metadata read one table: each element type comes
    out as TYPE_<v2> in config.pbtxt and as <v2> from the onnxruntime type string."""
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from tritonclient.grpc import model_config_pb2

    from resnext_deploy.serve.protocol import ORT_TO_V2

    types = {"UINT8": TensorProto.UINT8, "FP16": TensorProto.FLOAT16, "FP64": TensorProto.DOUBLE}
    names = {v2: f"t_{v2.lower()}" for v2 in types}
    nodes = [helper.make_node("Identity", ["input"], [names["UINT8"]])]
    nodes += [
        helper.make_node("Cast", ["input"], [names[v2]], to=types[v2]) for v2 in ("FP16", "FP64")
    ]
    outputs = [helper.make_tensor_value_info(names[v2], t, ["batch", 2]) for v2, t in types.items()]
    graph = helper.make_graph(
        nodes,
        "types",
        [helper.make_tensor_value_info("input", TensorProto.UINT8, ["batch", 2])],
        outputs,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    config = _parse_text(render_config("types", path, TritonConfig()))
    got = {
        t.name: model_config_pb2.DataType.Name(t.data_type) for t in [*config.input, *config.output]
    }
    assert got == {"input": "TYPE_UINT8"} | {names[v2]: f"TYPE_{v2}" for v2 in types}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    served = {t.name: ORT_TO_V2[t.type] for t in [*session.get_inputs(), *session.get_outputs()]}
    assert served == {"input": "UINT8"} | {names[v2]: v2 for v2 in types}


@pytest.mark.parametrize("name", ["../../escape", 'a"b', "a/b", "..", ".hidden", "a\\b", ""])
def test_model_names_triton_could_misread_are_refused_and_nothing_is_written(
    tiny_export: Path, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "deep" / "repo"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match="not allowed"):
        write_repository(tiny_export, out, TritonConfig(model_name=name))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "escape").exists() and not out.exists()


def test_a_hostile_architecture_name_in_the_manifest_cannot_leave_the_repository(
    tiny_export: Path, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["spec"]["arch"] = "../../evil"
    (export / "manifest.json").write_text(json.dumps(manifest))
    # refused when the manifest's spec is read (an arch is a name), or at the latest when the
    # model's folder is named
    with pytest.raises((ArtifactError, ConfigError), match="is a path|not allowed"):
        write_repository(export, tmp_path / "repo", TritonConfig())
    assert not (tmp_path / "repo").exists() and not (tmp_path.parent / "evil").exists()


def test_cli_refuses_an_escaping_name_in_one_line(tiny_export: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from resnext_deploy.cli import app

    out = tmp_path / "repo"
    result = CliRunner().invoke(
        app, ["triton", str(tiny_export), "--out", str(out), "--name", "../../escape"]
    )
    assert result.exit_code == 1 and "not allowed" in result.output
    assert "Traceback" not in result.output and not out.exists()


def _preferred_in_repository(tiny_export: Path, out: Path, *extra: str) -> list[int]:
    from typer.testing import CliRunner

    from resnext_deploy.cli import app

    args = ["triton", str(tiny_export), "--out", str(out), "--max-batch-size", "8", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return list(_parse(next(out.glob("*/config.pbtxt"))).dynamic_batching.preferred_batch_size)


def test_bench_report_sizes_that_are_not_the_defaults_reach_the_config(
    tiny_export: Path, tmp_path: Path
) -> None:
    """A report whose best onnxruntime throughputs are at batch 1 and 2 (1,000 and 1,333
    images/s; 4 and 8 reach 40), where the defaults up to max batch 8 are 4 and 8: an option
    dropped on its way to the config cannot pass for one honoured."""
    from tests.bench.test_harness import _report

    p50 = {("onnxruntime-cpu", 1): 1.0, ("onnxruntime-cpu", 2): 1.5}
    p50 |= {("onnxruntime-cpu", 4): 100.0, ("onnxruntime-cpu", 8): 200.0}
    (tmp_path / "bench.json").write_text(json.dumps(_report(p50)))
    chosen = _preferred_in_repository(
        tiny_export, tmp_path / "repo", "--bench-report", str(tmp_path / "bench.json")
    )
    assert chosen == [1, 2]
    assert _preferred_in_repository(tiny_export, tmp_path / "defaults") == [4, 8]
