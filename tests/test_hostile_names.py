"""Names a user or a file supplies, printed as given (issue 23, class 1).

A file, folder, class, tensor or backend name that looks like Rich markup (``[/x]``, ``[red]``)
or emoji codes (``:cat:``) is shown literally, never parsed: no ``MarkupError`` traceback after
the work is done, no text silently styled or dropped. Terminal escapes from names, ONNX metadata
or a report never reach the terminal raw: they are shown escaped (``\\x1b[2J``). A terminal that
cannot encode a name (``LANG=C``, ``PYTHONIOENCODING=ascii``) gets it escaped, not a crash.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnext_deploy.bench.report import BenchReport
from tests.conftest import TINY
from tests.test_data import make_folder
from tests.test_hostile import CLI, invoke
from tests.test_hostile import workspace as user_folder

workspace = user_folder  # the fixture, under the name the tests ask for

ESC = "\x1b[2J"  # clear screen
ESC_SHOWN = "\\x1b[2J"  # how it is printed: inert text


def assert_shown_literally(result, *names: str, exit_code: int = 0) -> None:  # noqa: ANN001
    """The command ended normally, without a traceback, each of ``names`` appears as given, and
    no raw escape character reached stdout or stderr."""
    assert result.exit_code == exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert "\x1b" not in result.stdout and "\x1b" not in result.stderr
    for name in names:
        assert name in result.output, f"{name!r} not shown in:\n{result.output}"


def photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(path)
    return path


def wide_cli_console(file: io.StringIO):  # noqa: ANN201
    """A console of the kind the CLI prints on (``resnext_deploy.cli.app.out``), wide enough
    that no cell is cropped."""
    from resnext_deploy.cli.app import out

    return type(out)(file=file, width=200)


# --- predict: file names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("[red]cat.png", "[red]cat.png"),  # was styled: "cat.png"
        ("[/x].png", "[/x].png"),  # a folder "[" holding "x].png": was a MarkupError
        ("\x1b[31mred.png", "\\x1b[31mred.png"),  # was a raw colour code
        (":cat:.png", ":cat:.png"),  # was an emoji
    ],
)
def test_predict_shows_file_names_as_given(
    workspace: Path, tiny_export: Path, name: str, shown: str
) -> None:
    photo(workspace / name)
    assert_shown_literally(invoke("predict", tiny_export, name), shown)


def test_predict_names_a_skipped_markup_file_literally(workspace: Path, tiny_export: Path) -> None:
    (workspace / "[").mkdir()
    (workspace / "[" / "x].png").write_bytes(b"not a png")
    result = invoke("predict", tiny_export, "photos", "[/x].png")
    assert_shown_literally(result, "[/x].png", "cat.png", exit_code=1)


@pytest.mark.parametrize(
    "env",
    [
        {"LANG": "C", "LC_ALL": "C"},
        {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"},
        {"PYTHONIOENCODING": "ascii"},
    ],
    ids=["C-locale", "C-locale-no-utf8-mode", "ascii-stdout"],
)
def test_predict_on_an_ascii_terminal_prints_non_ascii_names(
    workspace: Path, tiny_export: Path, env: dict[str, str]
) -> None:
    photo(workspace / "café-[red]x.png")
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "LC_ALL")}
    environ |= {"COLUMNS": "200"} | env
    proc = subprocess.run(
        [CLI, "predict", tiny_export, "café-[red]x.png"],
        capture_output=True,
        env=environ,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"Traceback" not in proc.stderr
    # however the terminal encodes it, the name is there: as UTF-8 or escaped
    assert b"caf\xc3\xa9-[red]x.png" in proc.stdout or b"caf\\xe9-[red]x.png" in proc.stdout


# --- export and train: what they wrote is printed -------------------------------------------------


def test_export_with_markup_in_class_names_and_out_folder(
    workspace: Path, tiny_checkpoint: Path
) -> None:
    names = ["[/x]", "[red]y", ":cat:", "c3", "c4", "c5", "c6"]
    out = f"{ESC}[/x]out"  # a folder "\x1b[2J[" holding "x]out"
    checkpoint = workspace / "[/x]tiny.pth"  # a folder "[" holding "x]tiny.pth"
    checkpoint.parent.mkdir()
    shutil.copy(tiny_checkpoint, checkpoint)
    result = invoke(
        "export", "[/x]tiny.pth", "--arch", TINY, "--class-names", ",".join(names), "--out", out
    )
    assert_shown_literally(result, f"{ESC_SHOWN}[/x]out", "exported")
    assert (workspace / out / "model.onnx").is_file()
    photo(workspace / "x.png")
    result = invoke("predict", out, "x.png", "--top-k", "7")
    assert_shown_literally(result, *names)


def test_train_with_markup_class_folders_and_out_folder(workspace: Path) -> None:
    make_folder(workspace / "data", {"[red]y": 8, ":cat:": 8}, size=8)
    result = invoke(
        "train", "data", "--arch", "resnext11_mini", "--epochs", "1", "--input-size", "8",
        "--out", "[/x]run",
    )  # fmt: skip
    assert_shown_literally(result, "[red]y", ":cat:", "[/x]run/best.pth")
    assert (workspace / "[/x]run" / "best.pth").is_file()


def test_triton_repository_in_a_markup_folder(workspace: Path, tiny_export: Path) -> None:
    out = f"{ESC}[red]repo[/x]"
    result = invoke("triton", tiny_export, "--out", out)
    assert_shown_literally(result, f"{ESC_SHOWN}[red]repo[/x]", "wrote")
    assert (workspace / out / TINY / "config.pbtxt").is_file()


# --- inspect: what an ONNX file says about itself -------------------------------------------------


def test_inspect_shows_onnx_names_and_metadata_inertly(workspace: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    tensor_in, tensor_out = f"[/x]in{ESC}", "[red]out"
    graph = helper.make_graph(
        [helper.make_node("Relu", [tensor_in], [tensor_out])],
        "g",
        [helper.make_tensor_value_info(tensor_in, TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info(tensor_out, TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, doc_string=f"[/x]{ESC}")
    helper.set_model_props(model, {"[/x]key": f"[red]value{ESC}", "note": ":cat: [bold]"})
    onnx.checker.check_model(model)
    onnx.save(model, workspace / "model.onnx")
    result = invoke("inspect", "model.onnx")
    shown = (f"[/x]in{ESC_SHOWN}", "[red]out", "[/x]key", f"[red]value{ESC_SHOWN}", ":cat: [bold]")
    assert_shown_literally(result, *shown)


# --- compare and bench: backend names from a report ---------------------------------------------


def report(backend_names: list[str], p50_ms: float) -> dict:
    stats = {
        "n": 10, "batch_size": 1, "mean_ms": p50_ms, "std_ms": 0.1, "min_ms": p50_ms,
        "max_ms": p50_ms, "p50_ms": p50_ms, "p90_ms": p50_ms, "p95_ms": p50_ms, "p99_ms": p50_ms,
        "iqr_ms": 0.1, "cv": 0.01, "images_per_s": 1000 / p50_ms, "ms_per_image": p50_ms,
    }  # fmt: skip
    return {
        "model": "m", "arch": f"[/x]arch{ESC}", "input_size": 64, "provider": "cpu",
        "threads": 1, "batch_sizes": [1],
        "results": [{"backend": b, "batch_size": 1, "stats": stats} for b in backend_names],
    }  # fmt: skip


BACKENDS = [f"[/x]ort{ESC}", "[red]eager", ":cat:"]
SHOWN = [f"[/x]ort{ESC_SHOWN}", "[red]eager", ":cat:"]


def test_compare_shows_backend_names_from_reports_inertly(workspace: Path) -> None:
    (workspace / "old.json").write_text(json.dumps(report(BACKENDS, 2.0)))
    (workspace / "new.json").write_text(json.dumps(report(BACKENDS, 2.1)))
    assert_shown_literally(invoke("compare", "old.json", "new.json"), *SHOWN)


def test_bench_tables_show_backend_names_and_errors_inertly() -> None:
    from resnext_deploy.render import print_bench

    data = report(BACKENDS, 2.0)
    data["results"].append(
        {"backend": "[red]trt", "batch_size": 1, "status": "error", "error": f"[/x] bad{ESC}"}
    )
    data["backends"] = [
        {"name": "[red]trt", "session_build": {"cache_dir": f"[/x]cache{ESC}", "seconds": 1.0}}
    ]
    text = io.StringIO()
    print_bench(wide_cli_console(text), BenchReport.from_dict(data))
    shown = text.getvalue()
    assert "\x1b" not in shown
    for name in [*SHOWN, f"[/x]arch{ESC_SHOWN}", "[red]trt", f"[/x] bad{ESC_SHOWN}"]:
        assert name in shown, f"{name!r} not shown in:\n{shown}"
    assert f"[/x]cache{ESC_SHOWN}" in shown
