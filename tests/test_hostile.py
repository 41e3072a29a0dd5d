"""Hostile and careless input, tried the way a user would, across the commands (issue 13).

Every case ends with a non-zero exit and exactly one clear ``error:`` line on stderr (no
traceback), or with a correct result; none leaves staging directories behind or changes a file
the user already had.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from resnext_deploy.cli import app
from tests.conftest import TINY
from tests.hostile_files import write_bomb_png

runner = CliRunner()
CLI = Path(sys.executable).with_name("resnext-deploy")


def invoke(*args: object, env: dict[str, str] | None = None):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args], env=env)


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path under ``root`` with its mode, size and a hash of its content."""
    found = {}
    for p in sorted(root.rglob("*")):
        data = hashlib.sha256(p.read_bytes()).digest() if p.is_file() else b""
        found[str(p.relative_to(root))] = (p.stat().st_mode, p.stat().st_size, data)
    return found


def no_leftovers_name(name: str) -> bool:
    return ".partial-" not in name and ".old-" not in name


def no_leftovers(root: Path) -> bool:
    return all(no_leftovers_name(p.name) for p in root.rglob(".*"))


def assert_one_error(result, fragment: str) -> None:  # noqa: ANN001
    """Exit 1, exactly one line starting with ``error:`` on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert fragment in errors[0], errors[0]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user's folder: photos, an earlier export and a file; checked untouched after each case."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(tmp_path / "photos" / "cat.png")
    (tmp_path / "notes.txt").write_text("my notes")
    before = snapshot(tmp_path)
    yield tmp_path
    after = {k: v for k, v in snapshot(tmp_path).items() if k in before}
    assert after == before, "a file the user already had was changed or removed"
    assert no_leftovers(tmp_path)
    # Staging for `--out ..` would sit two levels up; other tests' folders are not looked at.
    ours = (tmp_path.name, tmp_path.parent.name)
    beside = [*tmp_path.parent.iterdir(), *tmp_path.parent.parent.iterdir()]
    assert not [p for p in beside if not no_leftovers_name(p.name) and p.name[1:].startswith(ours)]


@pytest.fixture(scope="module")
def unwritable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder nothing can be created in: read-only by permissions, or /sys when running as
    root (which ignores permissions)."""
    if os.geteuid() == 0:
        folder = Path("/sys")
    else:
        folder = tmp_path_factory.mktemp("readonly")
        folder.chmod(0o555)
    try:
        (folder / "probe").mkdir()
    except OSError:
        yield folder
    else:
        (folder / "probe").rmdir()
        pytest.skip(f"{folder} is writable here")
    if os.geteuid() != 0:
        folder.chmod(0o755)


# --- export: the destination ------------------------------------------------------------------


@pytest.mark.parametrize("out", [".", "..", "photos/.."])
def test_export_into_the_current_directory_or_a_parent_is_refused(
    workspace: Path, tiny_checkpoint: Path, out: str
) -> None:
    result = invoke("export", tiny_checkpoint, "--arch", TINY, "--out", out, "--force")
    assert_one_error(result, "current directory")


def test_export_force_never_replaces_a_folder_that_is_not_an_export(
    workspace: Path, tiny_checkpoint: Path
) -> None:
    result = invoke("export", tiny_checkpoint, "--arch", TINY, "--out", "photos", "--force")
    assert_one_error(result, "not a resnext-deploy export")


def test_export_onto_an_existing_folder_without_force(workspace: Path, tiny_checkpoint: Path):  # noqa: ANN201
    assert_one_error(
        invoke("export", tiny_checkpoint, "--arch", TINY, "--out", "photos"), "already exists"
    )


def test_export_below_a_file(workspace: Path, tiny_checkpoint: Path) -> None:
    result = invoke("export", tiny_checkpoint, "--arch", TINY, "--out", "notes.txt/out")
    assert_one_error(result, "cannot create output folder")


@pytest.mark.parametrize("command", ["export", "train", "triton"])
def test_output_in_an_unwritable_folder(
    workspace: Path, unwritable: Path, tiny_checkpoint: Path, tiny_export: Path, command: str
) -> None:
    out = unwritable / "resnext-deploy-out"
    args = {
        "export": ["export", tiny_checkpoint, "--arch", TINY, "--out", out],
        "train": ["train", "photos", "--out", out],
        "triton": ["triton", tiny_export, "--out", out],
    }[command]
    assert_one_error(invoke(*args), "cannot")
    assert not out.exists()


def test_export_gives_files_the_umask_permissions(tiny_export: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(tiny_export.stat().st_mode) == 0o777 & ~umask
    for f in tiny_export.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f.name


# --- export: option values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        (["--opset", "99"], "opset 99"),
        (["--opset", "17"], "opset 17"),
        (["--input-size", "0"], "--input-size"),
        (["--input-size", "-5"], "--input-size"),
        (["--resize", "0"], "--resize"),
        (["--num-classes", "0"], "--num-classes"),
        (["--mean", "nan,0.4,0.4"], "--mean"),
        (["--std", "inf,0.2,0.2"], "--std"),
        (["--std", "0,0.2,0.2"], "std > 0"),
        (["--batch-sizes", "0"], "--batch-sizes"),
    ],
)
def test_export_values_it_cannot_honour_are_refused(
    workspace: Path, tiny_checkpoint: Path, option: list[str], fragment: str
) -> None:
    result = invoke("export", tiny_checkpoint, "--arch", TINY, "--out", "exp", *option)
    assert_one_error(result, fragment)
    assert not (workspace / "exp").exists()


def test_export_of_a_raw_pickle(workspace: Path) -> None:
    import pickle

    (workspace / "weights.pth").write_bytes(pickle.dumps({"fc.weight": [[1.0]]}))
    result = invoke("export", "weights.pth", "--arch", TINY, "--out", "exp")
    assert_one_error(result, "is a pickled Python object, not a state dict")


def test_a_checkpoint_cannot_steer_the_default_output_outside_exported(
    workspace: Path, tiny_checkpoint: Path
) -> None:
    import torch

    from resnext_deploy.models.registry import ARCHS

    spec = {"arch": "../../escaped", "arch_config": ARCHS.get(TINY).to_dict()}
    state = torch.load(tiny_checkpoint, weights_only=True)
    torch.save({"state_dict": state, "spec": spec}, workspace / "evil.pth")
    assert_one_error(invoke("export", "evil.pth"), "cannot name a folder")
    assert not (workspace.parent / "escaped").exists() and not (workspace / "exported").exists()


# --- predict, inspect ---------------------------------------------------------------------------


@pytest.mark.parametrize("option", [["--top-k", "0"], ["--top-k", "-1"], ["--batch-size", "0"]])
def test_predict_values_are_refused(workspace: Path, tiny_export: Path, option: list[str]) -> None:
    assert_one_error(invoke("predict", tiny_export, "photos", *option), option[0])


def test_predict_given_a_pytorch_checkpoint(workspace: Path, tiny_checkpoint: Path) -> None:
    assert_one_error(invoke("predict", tiny_checkpoint, "photos"), "is a PyTorch file")


def test_predict_skips_and_counts_a_decompression_bomb(workspace: Path, tiny_export: Path) -> None:
    folder = workspace / "mixed"
    shutil.copytree(workspace / "photos", folder)
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(folder / "dog.png")
    write_bomb_png(folder / "bomb.png")
    result = invoke("predict", tiny_export, folder, "--format", "json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    files = [Path(p["file"]).name for p in json.loads(result.stdout)["predictions"]]
    assert files == ["cat.png", "dog.png"]
    assert "bomb.png" in result.stderr and "decompression bomb" in result.stderr
    assert "1 file(s) could not be classified" in result.stderr


@pytest.mark.parametrize(("content", "fragment"), [(b"", "empty"), (b"\x08\x07" * 9, "ONNX")])
def test_inspect_of_a_file_that_is_no_model(workspace: Path, content: bytes, fragment: str) -> None:
    (workspace / "model.onnx").write_bytes(content)
    assert_one_error(invoke("inspect", "model.onnx"), fragment)


# --- verify -------------------------------------------------------------------------------------


def test_verify_with_a_bomb_among_the_images(workspace: Path, tiny_export: Path) -> None:
    write_bomb_png(workspace / "photos" / "bomb.png")
    result = invoke("verify", tiny_export, "--image", "photos", "--batch-sizes", "1")
    assert_one_error(result, "decompression bomb")


def _rehash(export: Path, name: str) -> None:
    manifest = json.loads((export / "manifest.json").read_text())
    data = (export / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (export / "manifest.json").write_text(json.dumps(manifest))


def test_a_failed_verify_says_so_on_stderr(workspace: Path, tiny_export: Path) -> None:
    import onnx
    from onnx import numpy_helper

    export = workspace / "tampered"
    shutil.copytree(tiny_export, export)
    proto = onnx.load(str(export / "model.onnx"))
    weights = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * -1, weights.name))
    onnx.save(proto, str(export / "model.onnx"))
    _rehash(export, "model.onnx")  # the manifest agrees: only parity can tell
    result = invoke("verify", export, "--batch-sizes", "1")
    assert_one_error(result, "parity check failed for onnxruntime-cpu")
    assert "torchscript" not in result.stderr.split("error:")[1]


def test_an_unlisted_file_in_an_export_is_mentioned(workspace: Path, tiny_export: Path) -> None:
    export = workspace / "export"
    shutil.copytree(tiny_export, export)
    (export / "model.int8.onnx").write_bytes(b"dropped here by someone")
    result = invoke("verify", export, "--batch-sizes", "1")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "model.int8.onnx" in result.stderr
    result = invoke("predict", export, "photos")
    assert result.exit_code == 0 and "model.int8.onnx" in result.stderr
    result = invoke("triton", export, "--out", "repo")
    assert result.exit_code == 0 and "model.int8.onnx" in result.stderr


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m | {"files": list(m["files"])},
        lambda m: m | {"files": {k: {"sha256": v["sha256"]} for k, v in m["files"].items()}},
        None,  # not UTF-8
    ],
    ids=["files-as-list", "missing-bytes", "not-utf8"],
)
def test_a_manifest_of_the_wrong_shape(workspace: Path, tiny_export: Path, edit) -> None:  # noqa: ANN001
    export = workspace / "export"
    shutil.copytree(tiny_export, export)
    path = export / "manifest.json"
    if edit is None:
        path.write_bytes(b"\xff\xfe" + path.read_bytes())
    else:
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    assert_one_error(invoke("verify", export), "manifest.json")


# --- train --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [["--batch-size", "0"], ["--epochs", "0"], ["--input-size", "0"], ["--weight-decay", "-1"]],
)
def test_train_values_are_refused(workspace: Path, option: list[str]) -> None:
    assert_one_error(invoke("train", "photos", "--out", "run", *option), option[0])
    assert not (workspace / "run").exists()


def test_train_does_not_replace_an_earlier_run(workspace: Path) -> None:
    run = workspace / "run"
    run.mkdir()
    (run / "best.pth").write_bytes(b"the 100% model")
    result = invoke("train", "digits", "--out", run, "--epochs", "1", "--input-size", "8")
    assert_one_error(result, "already holds a trained model")
    assert (run / "best.pth").read_bytes() == b"the 100% model"


def test_train_out_on_a_file_fails_before_training(workspace: Path) -> None:
    result = invoke("train", "digits", "--out", "notes.txt", "--epochs", "1", "--input-size", "8")
    assert_one_error(result, "not a directory")


# --- bench, compare, triton ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        (["--threads", "0", "--batch-sizes", "1"], "threads"),
        (["--threads", "-3", "--batch-sizes", "1"], "threads"),
        (["--batch-sizes", "5000000"], "batch size"),
    ],
)
def test_bench_values_are_refused(workspace: Path, option: list[str], fragment: str) -> None:
    # The least work, should a value slip through: one backend, one call.
    quick = ["--backend", "onnxruntime", "--warmup", "0", "--min-iters", "1", "--min-time", "0"]
    result = invoke("bench", TINY, "--out", "results", "--no-overhead", *quick, *option)
    assert_one_error(result, fragment)
    assert not (workspace / "results").exists()


BAD_REPORTS = {
    "list": [],
    "results-not-a-list": {"results": "fast"},
    "results-of-another-shape": {"results": [{"speed": 1}]},
    "other-json": {"model": "x", "latency": 3},
}


@pytest.mark.parametrize("shape", list(BAD_REPORTS))
def test_compare_and_triton_given_json_of_another_shape(
    workspace: Path, tiny_export: Path, shape: str
) -> None:
    (workspace / "report.json").write_text(json.dumps(BAD_REPORTS[shape]))
    assert_one_error(invoke("compare", "report.json", "report.json"), "report.json")
    result = invoke("triton", tiny_export, "--out", "repo", "--bench-report", "report.json")
    assert_one_error(result, "report.json")
    assert not (workspace / "repo").exists()


def test_compare_refuses_a_negative_threshold(workspace: Path) -> None:
    (workspace / "r.json").write_text("{}")
    assert_one_error(invoke("compare", "r.json", "r.json", "--threshold", "-5"), "--threshold")


@pytest.mark.parametrize("name", ["../../escape", 'a"b'])
def test_triton_model_names_that_escape_or_break_the_config(
    workspace: Path, tiny_export: Path, name: str
) -> None:
    result = invoke("triton", tiny_export, "--out", "repo", "--name", name)
    assert_one_error(result, "is not allowed")
    assert not (workspace / "repo").exists() and not (workspace.parent / "escape").exists()


def test_triton_force_never_replaces_a_folder_that_is_not_a_repository(
    workspace: Path, tiny_export: Path
) -> None:
    result = invoke("triton", tiny_export, "--out", "photos", "--force")
    assert_one_error(result, "not a resnext-deploy Triton model repository")


# --- the command line itself --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["export", "x.pth", "--bogus"], "No such option: --bogus"),
        (["frobnicate"], "No such command"),
        (["export"], "Missing argument"),
        (["predict", "m", "i", "--provider", "gpu"], "--provider"),
        (["verify", "x", "--batch-sizes"], "--batch-sizes"),
    ],
)
def test_usage_errors_are_one_line_and_exit_1(workspace: Path, args: list[str], fragment: str):  # noqa: ANN201
    result = invoke(*args)
    assert_one_error(result, fragment)
    assert "╭" not in result.output  # no boxed panel


def test_help_shows_the_documented_defaults() -> None:
    result = invoke("export", "--help", env={"COLUMNS": "250"})
    assert "[default: exported/<arch>]" in result.stdout
    assert "[default: inferred]" in result.stdout
    result = invoke("bench", "--help", env={"COLUMNS": "250"})
    assert "[default: all cores]" in result.stdout


def test_an_error_message_is_not_read_as_markup(workspace: Path) -> None:
    result = invoke("verify", "[red]not-there[/red]")
    assert_one_error(result, "[red]not-there[/red]")


def test_control_characters_in_a_name_stay_on_one_inert_line(workspace: Path) -> None:
    result = invoke("verify", "\x1b[31mred\x1b]0;title\x07\nsecond-line")
    assert_one_error(result, "export directory not found")
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "second-line" in [ln for ln in result.stderr.splitlines() if ln.startswith("error:")][0]


def test_an_interrupt_a_library_turned_into_an_error_is_still_an_interrupt(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resnext_deploy.inspect_model as inspect_model
    from resnext_deploy.errors import ExportError

    def exporter_like(_path: object) -> None:
        try:  # torch.onnx.export catches Ctrl-C and raises its own error, with colour codes
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except BaseException:  # noqa: BLE001
            raise ExportError("Failed to export the model. \x1b[96mhint") from None

    monkeypatch.setattr(inspect_model, "inspect_file", exporter_like)
    result = invoke("inspect", "model.onnx")
    assert result.exit_code == 130, result.output
    assert "interrupted (SIGINT)" in result.stderr and "error:" not in result.stderr


# --- signals, through the real entry point ------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_export_leaves_nothing(
    workspace: Path, tiny_checkpoint: Path, signum: int
) -> None:
    out = workspace / "exp"
    import resnext_deploy

    here = str(Path(resnext_deploy.__file__).parents[1])  # the code under test, not the install
    proc = subprocess.Popen(
        [CLI, "export", tiny_checkpoint, "--arch", TINY, "--out", out],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": here},
    )
    deadline = time.monotonic() + 120
    while not list(workspace.glob(".exp.partial-*")) and proc.poll() is None:
        assert time.monotonic() < deadline, "the export never started staging"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr and "\x1b[" not in stderr
    assert not out.exists() and no_leftovers(workspace)
