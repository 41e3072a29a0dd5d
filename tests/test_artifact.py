"""The export directory's manifest: every core file listed and matching, unlisted files reported
and never used, malformed manifests refused with a message instead of a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from resnext_deploy.artifact import (
    CORE_FILES,
    MANIFEST_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    Variant,
    check_model_name,
    model_name_for,
    open_artifact,
)
from resnext_deploy.cli import app
from resnext_deploy.errors import ArtifactError, ConfigError
from resnext_deploy.verify import VerifyConfig, verify_artifact


def _copy(export: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(export, dst)
    return dst


def _edit_manifest(directory: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    path = directory / MANIFEST_FILE
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _verify_cli(directory: Path):  # noqa: ANN202
    return CliRunner().invoke(app, ["verify", str(directory), "--batch-sizes", "1"])


def _assert_clean_failure(result, fragment: str) -> None:  # noqa: ANN001
    assert result.exit_code == 1, result.output
    assert fragment in result.stderr
    assert "Traceback" not in result.output and result.stderr.count("error:") == 1


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_the_untouched_export_opens_with_nothing_unlisted(tiny_export: Path) -> None:
    artifact = open_artifact(tiny_export)
    assert set(CORE_FILES) <= set(artifact.manifest.files)
    assert artifact.unlisted == () and artifact.variants == (Variant.FP32,)


@pytest.mark.parametrize("name", CORE_FILES)
def test_a_core_file_left_out_of_the_manifest_is_refused(
    tiny_export: Path, tmp_path: Path, name: str
) -> None:
    copy = _copy(tiny_export, tmp_path)
    _edit_manifest(copy, lambda m: m["files"].pop(name))
    with pytest.raises(ArtifactError, match=f"does not list {name}"):
        open_artifact(copy)


def test_an_unlisted_and_modified_model_onnx_is_refused(tiny_export: Path, tmp_path: Path) -> None:
    # The attack this guards against: drop the entry, then change the file freely.
    copy = _copy(tiny_export, tmp_path)
    _edit_manifest(copy, lambda m: m["files"].pop(ONNX_FILE))
    _flip_byte(copy / ONNX_FILE)
    with pytest.raises(ArtifactError, match=f"does not list {ONNX_FILE}"):
        open_artifact(copy)
    _assert_clean_failure(_verify_cli(copy), f"does not list {ONNX_FILE}")


def test_an_unlisted_file_is_reported_and_never_used(tiny_export: Path, tmp_path: Path) -> None:
    copy = _copy(tiny_export, tmp_path)
    # Not a model at all: verifying it as the fp16 variant would fail loudly.
    (copy / Variant.FP16.file).write_bytes(b"not an onnx model")
    (copy / "notes.txt").write_text("left here by hand")
    artifact = open_artifact(copy)
    assert artifact.unlisted == (Variant.FP16.file, "notes.txt")
    assert artifact.variants == (Variant.FP32,) and not artifact.has(Variant.FP16)
    with pytest.raises(ArtifactError, match="no fp16 variant"):
        artifact.require(Variant.FP16)
    report = verify_artifact(artifact, VerifyConfig(batch_sizes=(1,)))
    assert report.passed
    assert not [b.backend for b in report.backends if "fp16" in b.backend]
    assert _verify_cli(copy).exit_code == 0


def _bad_bytes(m: dict[str, Any]) -> None:
    m["files"][WEIGHTS_FILE]["bytes"] = "1234"


MALFORMED: dict[str, Callable[[dict[str, Any]], Any]] = {
    "files as a list": lambda m: m.update(files=list(m["files"])),
    "missing bytes": lambda m: m["files"][ONNX_FILE].pop("bytes"),
    "bytes as a string": _bad_bytes,
    "bytes as a bool": lambda m: m["files"][ONNX_FILE].update(bytes=True),
    "missing sha256": lambda m: m["files"][ONNX_FILE].pop("sha256"),
    "a path outside the directory": lambda m: m["files"].update(
        {"../escape.onnx": {"sha256": "0" * 64, "bytes": 1}}
    ),
    "spec as a string": lambda m: m.update(spec="resnext"),
    "spec with a bad value": lambda m: m["spec"].update(num_classes=0),
    "versions as a list": lambda m: m.update(versions=["torch"]),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_manifest_is_an_artifact_error(
    tiny_export: Path, tmp_path: Path, case: str
) -> None:
    copy = _copy(tiny_export, tmp_path)
    _edit_manifest(copy, MALFORMED[case])
    with pytest.raises(ArtifactError, match=MANIFEST_FILE):
        open_artifact(copy)
    _assert_clean_failure(_verify_cli(copy), MANIFEST_FILE)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"files": {}, "spec": {}}\xff\xfe', "not UTF-8"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8"),
        (b'{"files": ', "not valid JSON"),
        (b"[1, 2, 3]", "JSON object"),
        (b"", "not valid JSON"),
    ],
    ids=["trailing-non-utf8", "binary", "truncated-json", "json-array", "empty"],
)
def test_an_unreadable_manifest_is_an_artifact_error(
    tiny_export: Path, tmp_path: Path, content: bytes, fragment: str
) -> None:
    copy = _copy(tiny_export, tmp_path)
    (copy / MANIFEST_FILE).write_bytes(content)
    with pytest.raises(ArtifactError, match=fragment):
        open_artifact(copy)
    _assert_clean_failure(_verify_cli(copy), fragment)


SPEC_OF_THE_WRONG_SHAPE: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "arch_config a list": (lambda m: m["spec"].__setitem__("arch_config", [1]), "arch_config"),
    "layers a string": (
        lambda m: m["spec"]["arch_config"].__setitem__("layers", "abc"),
        "layers",
    ),
    "mean of strings": (lambda m: m["spec"].__setitem__("mean", ["a", 1, 2]), "mean"),
    "num_classes a string": (lambda m: m["spec"].__setitem__("num_classes", "7"), "num_classes"),
    "format from the future": (lambda m: m.__setitem__("format", 99), "format 99"),
}


@pytest.mark.parametrize("case", list(SPEC_OF_THE_WRONG_SHAPE))
def test_a_spec_of_the_wrong_shape_is_refused_when_the_export_is_opened(
    tiny_export: Path, tmp_path: Path, case: str
) -> None:
    edit, fragment = SPEC_OF_THE_WRONG_SHAPE[case]
    directory = _copy(tiny_export, tmp_path)
    _edit_manifest(directory, edit)
    with pytest.raises(ArtifactError, match=fragment):
        open_artifact(directory)
    _assert_clean_failure(_verify_cli(directory), fragment)


def test_a_served_name_is_one_path_segment_and_an_arch_becomes_one() -> None:
    assert check_model_name("resnext50_32x4d-v1.2") == "resnext50_32x4d-v1.2"
    assert model_name_for("resnext50 32x4d/ft") == "resnext50_32x4d_ft"
    for name in ("a/b", "..", "a..b", ".x", "-x", 'a"b', "", "x" * 129):
        with pytest.raises(ConfigError, match="Triton model name .* is not allowed"):
            check_model_name(name, "Triton model name")
    with pytest.raises(ConfigError, match="^model name '.._x' is not allowed"):
        model_name_for("../x")
