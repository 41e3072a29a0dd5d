"""predict --ray on Ray Data against plain predict: ~2,000 colour images of mixed sizes and a
few bad files, classified the same image by image, each path exactly once, bad files in the
error column; an interrupted run resumed to the same result; predict without --ray untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnext_deploy.batch.ledger import PARTS, read_results
from resnext_deploy.predict import Classifier, predict_paths
from tests.hostile_images import write_strip_png
from tests.test_hostile import assert_one_error, invoke

pytest.importorskip("ray.data", reason="predict --ray needs the [batch] extra")

IMAGES = 2000
BAD = ("truncated.jpg", "text.png", "strip.png", "fifo.jpg")
CLI = [sys.executable, "-m", "resnext_deploy"]
RUN_TIMEOUT_S = 600


def _photos(folder: Path) -> Path:
    """``IMAGES`` colour crops of scikit-learn's two photographs, 12 to 160 pixels a side, as
    JPEG and PNG, and the bad files of ``BAD``."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    for i in range(IMAGES - len(BAD)):
        photo = photos[i % 2]
        h, w = rng.integers(12, 161, 2)
        top, left = rng.integers(0, photo.shape[0] - h), rng.integers(0, photo.shape[1] - w)
        crop = Image.fromarray(photo[top : top + h, left : left + w])
        sub = folder / f"d{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        crop.save(sub / f"{i:05d}.{'jpg' if i % 3 else 'png'}")
    good = (folder / "d1" / "00001.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "text.png").write_text("not an image")
    write_strip_png(folder / "strip.png", 1, 60_000)  # its resize would be gigapixels
    os.mkfifo(folder / "fifo.jpg")  # reading it would block forever
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _photos(tmp_path_factory.mktemp("batch") / "photos")


def _predict_ray(export: Path, source: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    command = [*CLI, "predict", str(export), str(source), "--ray", "--out", str(out)]
    return subprocess.Popen(
        [*command, "--format", "json", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"RAY_ADDRESS": ""},
    )


def _finished(proc: subprocess.Popen[str]) -> dict:
    stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(stdout)


@pytest.fixture(scope="module")
def ray_run(tiny_export: Path, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("batch") / "results"
    # Two actors on a 2-CPU machine: a pool that took both CPUs would leave none to decode.
    run = _predict_ray(tiny_export, photos, out, "--shard-size", "300", "--actors", "2")
    summary = _finished(run)
    assert summary["images"] == IMAGES and summary["shards"] == 7
    return out


def test_ray_data_classifies_each_image_as_predict_does(
    tiny_export: Path, photos: Path, ray_run: Path
) -> None:
    table = read_results(ray_run).to_pylist()
    with Classifier(tiny_export) as classifier:
        plain = predict_paths(classifier, [photos], top_k=5, batch_size=64)
    expected = {p.file: p for p in plain.predictions}
    got = {row["path"]: row for row in table}
    assert len(table) == len(got) == IMAGES  # each path exactly once
    assert sorted(got) == sorted(
        str(p.absolute()) for p in photos.rglob("*") if p.is_file() or p.is_fifo()
    )
    ok = [row for row in table if row["error"] is None]
    assert len(ok) == len(expected) == IMAGES - len(BAD)
    for row in ok:
        want = expected[row["path"]]
        assert row["labels"] == list(want.labels), row["path"]
        assert row["class_indices"] == list(want.indices), row["path"]
        np.testing.assert_allclose(row["probabilities"], want.probabilities, rtol=0, atol=1e-6)
    errors = {Path(row["path"]).name: row["error"] for row in table if row["error"]}
    assert sorted(errors) == sorted(BAD)
    assert "not a readable image" in errors["text.png"]
    assert "1x60000" in errors["strip.png"]
    assert "not a regular file" in errors["fifo.jpg"]
    assert {row["model_sha256"] for row in table} == {_sha256(tiny_export / "model.onnx")}


def test_the_summary_is_counted_from_the_files(ray_run: Path) -> None:
    summary = json.loads((ray_run / "summary.json").read_text())
    assert summary["classified"] == IMAGES - len(BAD) and summary["errors"] == len(BAD)
    assert summary["images_this_run"] == IMAGES and summary["shards_resumed"] == 0


def _descendants(pid: int) -> dict[int, str]:
    import psutil

    try:
        return {p.pid: p.name() for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return {}


def test_an_interrupted_run_resumes_to_the_same_rows_and_leaves_no_ray_process(
    tiny_export: Path, photos: Path, ray_run: Path, tmp_path: Path
) -> None:
    import psutil

    out = tmp_path / "results"
    proc = _predict_ray(tiny_export, photos, out, "--shard-size", "100")
    seen: dict[int, str] = {}
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while len(list((out / PARTS).glob("part-*.parquet"))) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        seen |= _descendants(proc.pid)
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    done = len(list((out / PARTS).glob("part-*.parquet")))
    assert 3 <= done < 20
    _, alive = psutil.wait_procs([psutil.Process(p) for p in seen if psutil.pid_exists(p)], 15)
    assert [p.pid for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []

    summary = _finished(_predict_ray(tiny_export, photos, out, "--shard-size", "100"))
    assert summary["shards_resumed"] == done and summary["images"] == IMAGES
    assert summary["images_this_run"] == IMAGES - 100 * done
    resumed, whole = read_results(out), read_results(ray_run)
    assert resumed.column("index").to_pylist() == list(range(IMAGES))
    for column in ("path", "labels", "class_indices", "error"):
        assert resumed.column(column).to_pylist() == whole.column(column).to_pylist(), column
    np.testing.assert_allclose(
        np.array([p or [0] * 5 for p in resumed.column("probabilities").to_pylist()]),
        np.array([p or [0] * 5 for p in whole.column("probabilities").to_pylist()]),
        atol=1e-6,
    )


def test_a_folder_of_another_run_is_refused_before_ray_starts(
    tiny_export: Path, photos: Path, ray_run: Path
) -> None:
    before = sorted(p.name for p in (ray_run / PARTS).iterdir())
    result = invoke("predict", tiny_export, photos, "--ray", "--out", ray_run, "--top-k", "3")
    assert_one_error(result, "holds a run of another model, other inputs or another --top-k")
    assert sorted(p.name for p in (ray_run / PARTS).iterdir()) == before


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--out", "x"], "--out only work with --ray"),
        (["--actors", "2", "--column", "file"], "--actors, --column only work with --ray"),
        (["--ray"], "give --out"),
        (["--ray", "--out", "x", "--shard-size", "0"], "--shard-size"),
    ],
)
def test_ray_options_that_cannot_work_are_one_error(
    tiny_export: Path, photos: Path, tmp_path: Path, args: list[str], fragment: str
) -> None:
    os.chdir(tmp_path)
    result = invoke("predict", tiny_export, photos / "d0", *args)
    assert_one_error(result, fragment)
    assert list(tmp_path.iterdir()) == []


def test_an_actor_larger_than_the_cluster_is_one_error_and_no_folder(
    tiny_export: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    result = invoke(
        "predict", tiny_export, photos / "d0", "--ray", "--out", out, "--cpus-per-actor", "1000"
    )
    assert_one_error(result, "takes 1000 CPU(s) and decoding needs 1, but the Ray cluster has")
    assert not out.exists()


def test_ray_takes_one_source(tiny_export: Path, photos: Path, tmp_path: Path) -> None:
    result = invoke(
        "predict", tiny_export, photos / "d0", photos / "d1", "--ray", "--out", tmp_path / "o"
    )
    assert_one_error(result, "--ray takes one source")


def test_predict_without_ray_imports_neither_ray_nor_pyarrow(
    tiny_export: Path, photos: Path
) -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from resnext_deploy.cli import app; "
        f"r = CliRunner().invoke(app, ['predict', {str(tiny_export)!r}, {str(photos / 'd0')!r}]); "
        "print(r.exit_code, sorted(m for m in ('ray', 'pyarrow', 'pandas', 'torch') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert result.stdout.split("\n")[-2] == "0 []", result.stdout[-2000:]


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
