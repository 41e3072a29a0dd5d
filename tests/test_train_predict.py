"""Train -> export (no flags) -> predict, and the torch-free prediction path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from resnext_deploy.cli import app
from resnext_deploy.models.checkpoint import load_model
from resnext_deploy.predict import Classifier
from resnext_deploy.preprocess import load_image, preprocess
from tests.test_data import make_folder

runner = CliRunner()


def test_best_checkpoint_carries_its_spec(digits_run) -> None:  # noqa: ANN001
    result, export = digits_run
    saved = torch.load(result.checkpoint, weights_only=True)
    assert saved["spec"]["class_names"] == [str(i) for i in range(10)]
    assert saved["best_val_acc"] == max(s.val_acc for s in result.history)
    assert export.spec.input_size == 16 and export.spec.mean == (0.5, 0.5, 0.5)
    assert result.confusion.sum() == len(result.val_images)
    assert np.trace(result.confusion) / result.confusion.sum() == pytest.approx(result.best_val_acc)
    assert result.curves and result.curves.stat().st_size > 10_000


def test_onnx_accuracy_on_held_out_digits_equals_pytorch(digits_run) -> None:  # noqa: ANN001
    result, export = digits_run
    model, spec = load_model(result.checkpoint)
    images = [im for im in result.val_images.images]
    with torch.inference_mode():
        torch_pred = model(torch.from_numpy(preprocess(images, spec))).argmax(1).numpy()
    classifier = Classifier(export.out_dir)
    onnx_pred = classifier.probabilities(images).argmax(1)
    np.testing.assert_array_equal(onnx_pred, torch_pred)
    assert (onnx_pred == result.val_images.labels).mean() > 0.8


def test_predict_matches_eager_softmax_on_files(digits_run, tmp_path: Path) -> None:  # noqa: ANN001
    result, export = digits_run
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(result.val_images.images[i]).resize((40, 40)).save(path)
        paths.append(path)
    res = runner.invoke(app, ["predict", str(export.out_dir), str(tmp_path), "--format", "json"])
    assert res.exit_code == 0, res.output
    preds = json.loads(res.stdout)["predictions"]
    model, spec = load_model(result.checkpoint)
    with torch.inference_mode():
        logits = model(torch.from_numpy(preprocess([load_image(p) for p in paths], spec)))
    probs = torch.softmax(logits, 1).numpy()
    for p, row in zip(preds, probs, strict=True):
        assert p["top"][0]["index"] == int(row.argmax())
        assert p["top"][0]["probability"] == pytest.approx(float(row.max()), abs=1e-5)


def test_corrupt_file_is_reported_and_the_run_continues(digits_run, tmp_path: Path) -> None:  # noqa: ANN001
    _, export = digits_run
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    res = runner.invoke(app, ["predict", str(export.out_dir), str(tmp_path), "--format", "csv"])
    assert res.exit_code == 1
    assert "bad.png" in res.stderr and "Traceback" not in res.output
    rows = res.stdout.strip().splitlines()
    assert rows[0] == "file,rank,label,index,probability" and len(rows) == 1 + 5
    assert all("ok.png" in r for r in rows[1:])


def test_predict_runs_where_torch_cannot_be_imported(digits_run, tmp_path: Path) -> None:  # noqa: ANN001
    _, export = digits_run
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(tmp_path / "x.png")
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from resnext_deploy.cli import app\n"
        f"app([ 'predict', {str(export.out_dir)!r}, {str(tmp_path)!r}, '--format', 'json'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["predictions"][0]["file"].endswith("x.png")


def test_predict_module_does_not_import_torch() -> None:
    code = "import sys, resnext_deploy.predict, resnext_deploy.cli; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_train_on_an_image_folder_via_cli(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", {"red": 10, "blue": 10})
    (root / "red" / "corrupt.png").write_text("x")
    res = runner.invoke(
        app,
        [
            "train",
            str(root),
            "--arch",
            "resnext11_mini",
            "--epochs",
            "2",
            "--input-size",
            "16",
            "--out",
            str(tmp_path / "run"),
            "--lr",
            "0.01",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "corrupt.png" in res.stdout and "best validation accuracy" in res.stdout
    saved = torch.load(tmp_path / "run" / "best.pth", weights_only=True)
    assert saved["spec"]["class_names"] == ["blue", "red"]


def test_train_rejects_bad_input(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["train", str(tmp_path / "empty"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 1 and "no class subfolders" in res.stderr
    assert not (tmp_path / "run").exists()
    res = runner.invoke(app, ["train", "digits", "--optimizer", "rmsprop"])
    assert res.exit_code == 1 and "'rmsprop' is not one of 'adam'" in res.stderr


def test_predict_missing_model(tmp_path: Path) -> None:
    res = runner.invoke(app, ["predict", str(tmp_path / "none.onnx"), str(tmp_path)])
    assert res.exit_code == 1 and "ONNX model not found" in res.stderr
