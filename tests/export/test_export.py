from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from resnext_deploy.artifact import MANIFEST_FILE as MANIFEST
from resnext_deploy.artifact import ONNX_FILE, TORCHSCRIPT_FILE, WEIGHTS_FILE, open_artifact
from resnext_deploy.errors import ArtifactError, ConfigError, ParityError
from resnext_deploy.export.onnx_export import conv_summary, read_onnx_spec
from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
from resnext_deploy.fileio import sha256_of
from resnext_deploy.models.checkpoint import LoadOptions
from resnext_deploy.parity import BackendParity, ParityReport
from resnext_deploy.runtime.torch_runners import load_torchscript, read_torchscript_spec
from resnext_deploy.verify import VerifyConfig, verify_artifact
from tests.conftest import TINY


def test_export_writes_every_artifact_listed_in_the_manifest(tiny_export: Path) -> None:
    manifest = json.loads((tiny_export / MANIFEST).read_text())
    assert set(manifest["files"]) == {ONNX_FILE, TORCHSCRIPT_FILE, WEIGHTS_FILE, "parity.json"}
    for name, entry in manifest["files"].items():
        assert sha256_of(tiny_export / name) == entry["sha256"]
    assert manifest["versions"]["torch"].startswith("2.14")
    assert not [p for p in tiny_export.parent.iterdir() if ".partial-" in p.name]


def test_onnx_graph_io_opset_and_grouped_convs(tiny_export: Path) -> None:
    proto = onnx.load(str(tiny_export / ONNX_FILE))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert max(o.version for o in proto.opset_import if o.domain == "") >= 18
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    # resnext14_8x4d: four blocks, each with exactly one Conv(group=8); no Concat, no Split.
    assert conv_summary(proto).by_group == {1: 13, 8: 4}
    assert not {"Concat", "Split", "Slice"} & {n.op_type for n in proto.graph.node}
    onnx.checker.check_model(proto, full_check=True)


def test_spec_travels_inside_both_artifacts(tiny_export: Path, tiny_checkpoint: Path) -> None:
    onnx_spec = read_onnx_spec(tiny_export / ONNX_FILE)
    ts_spec = read_torchscript_spec(tiny_export / TORCHSCRIPT_FILE)
    assert onnx_spec == ts_spec
    assert onnx_spec.class_names == tuple(f"c{i}" for i in range(7))
    assert onnx_spec.source_sha256 == sha256_of(tiny_checkpoint)
    props = {p.key: p.value for p in onnx.load(str(tiny_export / ONNX_FILE)).metadata_props}
    assert json.loads(props["mean"]) == pytest.approx([0.485, 0.456, 0.406])
    assert props["input_size"] == "64" and "onnx" in json.loads(props["versions"])


def test_torchscript_reloads_and_runs_any_batch(tiny_export: Path, tiny_model) -> None:
    module, _ = load_torchscript(tiny_export / TORCHSCRIPT_FILE, optimize=True)
    x = torch.randn(5, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(module(x), tiny_model(x), rtol=1e-4, atol=1e-5)


def test_verify_passes_on_seeded_inputs_and_user_images(tiny_export: Path, tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    report = verify_artifact(
        open_artifact(tiny_export), VerifyConfig(batch_sizes=(1, 5), images=(tmp_path,))
    )
    assert report.passed
    assert report.inputs[-1] == "3 user images"
    assert {b.backend for b in report.backends} >= {"torchscript", "onnxruntime-cpu"}
    for b in report.backends:
        assert b.rows == 1 + 5 + 3 and b.max_rel <= 1e-4 and b.top1 == 1.0


def _copy(export: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(export, dst)
    return dst


def test_tampered_artifact_is_detected(tiny_export: Path, tmp_path: Path) -> None:
    copy = _copy(tiny_export, tmp_path)
    data = bytearray((copy / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / ONNX_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        open_artifact(copy)


def test_truncated_artifact_is_detected(tiny_export: Path, tmp_path: Path) -> None:
    copy = _copy(tiny_export, tmp_path)
    data = (copy / TORCHSCRIPT_FILE).read_bytes()
    (copy / TORCHSCRIPT_FILE).write_bytes(data[: len(data) // 3])
    with pytest.raises(ArtifactError, match="truncated"):
        open_artifact(copy)


def test_existing_output_is_kept_without_force(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="allow replacing it \\(force\\)"):
        export_checkpoint(tiny_checkpoint, LoadOptions(arch=TINY), ExportConfig(out_dir=out))
    assert (out / "keep.txt").read_text() == "mine"


def test_failed_parity_gate_leaves_nothing(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch
) -> None:
    import resnext_deploy.export.pipeline as pipeline

    def disagreeing(*_args, **_kwargs) -> ParityReport:
        bad = BackendParity("onnxruntime-cpu", max_rel=0.5, failures=["max relative error 0.5"])
        return ParityReport("torch-eager", ["random"], [bad])

    monkeypatch.setattr(pipeline, "compare_model_with_files", disagreeing)
    out = tmp_path / "gated"
    with pytest.raises(ParityError, match="nothing was written"):
        export_checkpoint(tiny_checkpoint, LoadOptions(arch=TINY), ExportConfig(out_dir=out))
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_an_old_export(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text("{}")  # an old export: --force replaces only exports
    (out / "stale.txt").write_text("old")
    export_checkpoint(
        tiny_checkpoint, LoadOptions(arch=TINY), ExportConfig(out_dir=out, overwrite=True)
    )
    assert not (out / "stale.txt").exists() and (out / MANIFEST).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_interrupted_staging_leaves_nothing_and_keeps_the_old_export(tmp_path: Path) -> None:
    from resnext_deploy.export.atomic import atomic_directory

    target = tmp_path / "out"
    target.mkdir()
    (target / MANIFEST).write_text("{}")
    (target / "old.txt").write_text("previous export")
    with pytest.raises(KeyboardInterrupt), atomic_directory(target, overwrite=True) as stage:
        (stage / "half.onnx").write_bytes(b"partial")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (target / "old.txt").read_text() == "previous export"
