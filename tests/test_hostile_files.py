"""Hostile files in and around an export, second sweep (issue 23, classes 2, 7 and 8): a file
that no longer matches its manifest, a manifest whose labels no longer match the model, models
onnxruntime cannot load or run, a crafted manifest, initializers larger than their data, and
FIFOs where images or metadata are expected.

Every case ends with exit 1 and one ``error:`` line naming the file and the cause (or, for a
FIFO found in a folder, with that file skipped and reported); none hangs, none is silent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnext_deploy.artifact import MANIFEST_FILE, ONNX_FILE, TORCHSCRIPT_FILE, open_artifact
from resnext_deploy.errors import ArtifactError
from tests import test_hostile
from tests.test_hostile import CLI, assert_one_error, invoke

workspace = (
    test_hostile.workspace
)  # the fixture: a user's folder, checked untouched after each case

MISMATCH = "does not match its sha256"
QUICK_BENCH = ["--backend", "onnxruntime", "--batch-sizes", "1", "--warmup", "0"]
QUICK_BENCH += ["--min-iters", "1", "--min-time", "0", "--no-overhead"]

# Every command that consumes an export, and what it would have written had it gone on.
CONSUMERS: dict[str, tuple[Callable[[Path], list[object]], str | None]] = {
    "predict": (lambda e: ["predict", e, "photos"], None),
    "predict-its-file": (lambda e: ["predict", e / ONNX_FILE, "photos"], None),
    "verify": (lambda e: ["verify", e, "--batch-sizes", "1"], None),
    "bench": (lambda e: ["bench", e, "--out", "results", *QUICK_BENCH], "results"),
    "triton": (lambda e: ["triton", e, "--out", "repo"], "repo"),
    "inspect": (lambda e: ["inspect", e], None),
    "inspect-its-file": (lambda e: ["inspect", e / ONNX_FILE], None),
    # --ort-web: a folder that is not the package, so nothing is ever installed from npm
    "web": (lambda e: ["web", e, "--out", "site", "--ort-web", "no-ort-web"], "site"),
}


def copy_export(export: Path, workspace: Path, name: str = "export") -> Path:
    copy = workspace / name
    shutil.copytree(export, copy)
    return copy


def flip_one_byte(path: Path) -> None:
    """Change the byte in the middle (inside the weights): same size, the file still parses."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def rehash(export: Path, name: str) -> None:
    """Make the manifest agree with ``name`` again, as a careless (or hostile) tool would."""
    manifest = json.loads((export / MANIFEST_FILE).read_text())
    data = (export / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (export / MANIFEST_FILE).write_text(json.dumps(manifest))


def assert_refused(workspace: Path, consumer: str, export: Path, fragment: str) -> None:
    args, output = CONSUMERS[consumer]
    result = invoke(*args(export))
    assert_one_error(result, fragment)
    assert output is None or not (workspace / output).exists()


# --- class 2: every consumer of an export checks it against its manifest -----------------------


@pytest.mark.parametrize("changed", [ONNX_FILE, TORCHSCRIPT_FILE])
@pytest.mark.parametrize("consumer", list(CONSUMERS))
def test_every_consumer_refuses_a_file_changed_after_export(
    workspace: Path, tiny_export: Path, changed: str, consumer: str
) -> None:
    export = copy_export(tiny_export, workspace)
    flip_one_byte(export / changed)
    assert_refused(workspace, consumer, export, MISMATCH)


@pytest.mark.parametrize("changed", [ONNX_FILE, TORCHSCRIPT_FILE, "weights.pt", "parity.json"])
def test_opening_an_export_compares_every_core_files_hash(
    tmp_path: Path, tiny_export: Path, changed: str
) -> None:
    export = copy_export(tiny_export, tmp_path)
    flip_one_byte(export / changed)
    with pytest.raises(ArtifactError, match=f"{changed} {MISMATCH}"):
        open_artifact(export)


def swap_two_labels(export: Path) -> None:
    manifest = json.loads((export / MANIFEST_FILE).read_text())
    names = manifest["spec"]["class_names"]
    names[0], names[1] = names[1], names[0]
    (export / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize("consumer", ["predict", "predict-its-file", "verify", "web"])
def test_labels_edited_in_the_manifest_are_refused_by_what_prints_or_ships_them(
    workspace: Path, tiny_export: Path, consumer: str
) -> None:
    export = copy_export(tiny_export, workspace)
    swap_two_labels(export)  # every hash still matches: only the model's own spec can tell
    assert_refused(workspace, consumer, export, "differs from its export's manifest")


def test_a_file_beside_an_export_that_its_manifest_does_not_list_is_not_used(
    workspace: Path, tiny_export: Path
) -> None:
    export = copy_export(tiny_export, workspace)
    shutil.copyfile(export / ONNX_FILE, export / "other.onnx")
    assert_one_error(invoke("predict", export / "other.onnx", "photos"), "is not listed")


def test_a_bare_onnx_file_needs_no_manifest(workspace: Path, tiny_export: Path) -> None:
    shutil.copyfile(tiny_export / ONNX_FILE, workspace / "model.onnx")
    result = invoke("predict", "model.onnx", "photos", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [p["file"] for p in json.loads(result.stdout)["predictions"]] == ["photos/cat.png"]


# --- class 8: files onnxruntime cannot load or run, crafted JSON, initializers ------------------


def garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())


def newer_ir(path: Path) -> None:
    import onnx

    proto = onnx.load(str(path))
    proto.ir_version = 14  # newer than this onnxruntime reads
    onnx.save(proto, str(path))


@pytest.mark.parametrize(
    ("spoil", "cause"),
    [(garbage, "Protobuf parsing failed"), (newer_ir, "Unsupported model IR version: 14")],
    ids=["garbage", "ir-14"],
)
@pytest.mark.parametrize("consumer", ["predict", "verify", "web"])
def test_a_model_onnxruntime_cannot_load_is_one_error_naming_file_and_cause(
    workspace: Path, tiny_export: Path, spoil: Callable[[Path], None], cause: str, consumer: str
) -> None:
    export = copy_export(tiny_export, workspace)
    spoil(export / ONNX_FILE)
    rehash(export, ONNX_FILE)  # the manifest agrees: the model itself is the problem
    args, output = CONSUMERS[consumer]
    result = invoke(*args(export))
    assert_one_error(result, cause)
    assert f"{ONNX_FILE} cannot be loaded by onnxruntime" in result.stderr
    assert output is None or not (workspace / output).exists()


def test_predict_runs_the_graph_with_the_preprocessing_inside(
    workspace: Path, tiny_preprocess_export: Path
) -> None:
    Image.fromarray(np.arange(40 * 56 * 3, dtype=np.uint8).reshape(40, 56, 3)).save(
        workspace / "photos" / "ramp.png"
    )
    results = []
    for model in (tiny_preprocess_export, tiny_preprocess_export / "model.preprocess.onnx"):
        result = invoke("predict", model, "photos", "--format", "json")
        assert result.exit_code == 0, result.output
        results.append(json.loads(result.stdout)["predictions"])
    fp32, uint8 = results
    assert [p["file"] for p in uint8] == [p["file"] for p in fp32]
    for a, b in zip(fp32, uint8, strict=True):
        assert [t["index"] for t in a["top"][:1]] == [t["index"] for t in b["top"][:1]]
        assert np.allclose(
            [t["probability"] for t in a["top"]], [t["probability"] for t in b["top"]], atol=1e-4
        )


def huge_run_model(path: Path, spec_json: str) -> Path:
    """A classifier-shaped ONNX file (``input`` -> 7 ``logits``, the spec in its metadata) whose
    run allocates a 10^8 x 10^8 float tensor: 40 PB, past any address space, so the allocation
    fails wherever the test runs (4 TB could succeed, then be filled, under overcommit)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([10**8, 10**8], np.int64), "shape")
    weights = numpy_helper.from_array(np.ones((3, 7), np.float32), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["scores"]),
        helper.make_node("ConstantOfShape", ["shape"], ["huge"]),
        helper.make_node("ReduceSum", ["huge"], ["total"], keepdims=0),
        helper.make_node("Add", ["scores", "total"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "huge",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 7])],
        [shape, weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"resnext_deploy.spec": spec_json})
    onnx.save(model, str(path))
    return path


def test_a_model_whose_run_cannot_be_allocated_is_one_error(
    workspace: Path, tiny_export: Path
) -> None:
    spec = json.dumps(json.loads((tiny_export / MANIFEST_FILE).read_text())["spec"])
    huge_run_model(workspace / "huge.onnx", spec)
    result = invoke("predict", "huge.onnx", "photos")
    assert_one_error(result, "could not run huge.onnx")
    assert "Failed to allocate memory" in result.stderr
    assert "ONNXRuntimeError" not in result.stderr and "bfc_arena.cc" not in result.stderr


def oversized_initializer_model(path: Path, typed: bool) -> Path:
    """An ONNX file whose initializer declares 100000 x 100000 floats over 4 bytes of data."""
    import onnx
    from onnx import TensorProto, helper

    dims = [100000, 100000]
    if typed:
        tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims, float_data=[1.0])
    else:
        tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims, raw_data=b"\0" * 4)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "oversized",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [tensor],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("typed", [False, True], ids=["raw-data", "float-data"])
def test_inspect_of_an_initializer_larger_than_its_data(workspace: Path, typed: bool) -> None:
    oversized_initializer_model(workspace / "big.onnx", typed)
    assert_one_error(invoke("inspect", "big.onnx"), "declares 100000 x 100000 values")
    result = invoke("predict", "big.onnx", "photos")  # onnxruntime's own refusal, wrapped
    assert_one_error(result, "big.onnx cannot be loaded by onnxruntime")


CRAFTED_MANIFESTS: dict[str, Callable[[str], str]] = {
    "nested-10000-deep": lambda text: text[:-1] + ', "x": ' + "[" * 10000 + "]" * 10000 + "}",
    "5000-digit-integer": lambda text: text.replace('"format": 1', '"format": ' + "9" * 5000),
}


@pytest.mark.parametrize("case", list(CRAFTED_MANIFESTS))
@pytest.mark.parametrize("consumer", ["predict", "verify", "inspect"])
def test_a_crafted_manifest_is_one_error(
    workspace: Path, tiny_export: Path, case: str, consumer: str
) -> None:
    export = copy_export(tiny_export, workspace)
    text = json.dumps(json.loads((export / MANIFEST_FILE).read_text()))
    crafted = CRAFTED_MANIFESTS[case](text)
    assert crafted != text
    (export / MANIFEST_FILE).write_text(crafted)
    assert_refused(workspace, consumer, export, MANIFEST_FILE)


def test_a_web_folder_whose_metadata_is_nested_10000_deep_is_not_taken_for_a_site(
    workspace: Path, tiny_export: Path
) -> None:
    taken = workspace / "taken"
    taken.mkdir()
    (taken / "model.json").write_text("[" * 10000 + "]" * 10000)
    result = invoke("web", tiny_export, "--out", taken, "--force", "--ort-web", "no-ort-web")
    assert_one_error(result, "not a")
    assert (taken / "model.json").read_text().startswith("[[[")


# --- class 7: FIFOs where files are expected never block ---------------------------------------


def run_cli(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real entry point in a child process, so that a read that blocks fails the test after
    ``timeout`` instead of hanging the suite."""
    import resnext_deploy

    here = str(Path(resnext_deploy.__file__).parents[1])  # the code under test, not the install
    try:
        return subprocess.run(
            [CLI, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=os.environ | {"PYTHONPATH": here, "COLUMNS": "200"},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"resnext-deploy {' '.join(map(str, args))} blocked for {timeout} s")


def one_error_line(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")


@needs_fifo
def test_predict_skips_and_reports_a_fifo_in_an_image_folder(
    workspace: Path, tiny_export: Path
) -> None:
    os.mkfifo(workspace / "photos" / "pipe.png")
    result = run_cli("predict", tiny_export, "photos", "--format", "json")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    files = [p["file"] for p in json.loads(result.stdout)["predictions"]]
    assert files == ["photos/cat.png"]
    assert "pipe.png is not a regular file" in result.stderr
    assert "1 file(s) could not be classified" in result.stderr


@needs_fifo
def test_predict_refuses_a_fifo_named_as_an_image(workspace: Path, tiny_export: Path) -> None:
    os.mkfifo(workspace / "pipe.png")
    one_error_line(run_cli("predict", tiny_export, "pipe.png"), "pipe.png is not a regular file")


@needs_fifo
def test_a_fifo_in_place_of_a_manifest_is_refused_unread(
    workspace: Path, tiny_export: Path
) -> None:
    export = copy_export(tiny_export, workspace)
    (export / MANIFEST_FILE).unlink()
    os.mkfifo(export / MANIFEST_FILE)
    one_error_line(run_cli("verify", export), "is not a regular file")


@needs_fifo
def test_a_fifo_as_a_taken_folders_site_metadata_is_not_read(
    workspace: Path, tiny_export: Path
) -> None:
    taken = workspace / "taken"
    taken.mkdir()
    os.mkfifo(taken / "model.json")
    result = run_cli("web", tiny_export, "--out", taken, "--force", "--ort-web", "no-ort-web")
    one_error_line(result, "not a")
