"""The page in a real headless Chromium: it classifies the colour photos as ``predict`` does,
and bad files end in a readable error while the page keeps working."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from resnext_deploy.artifact import Variant
from resnext_deploy.errors import ConfigError
from resnext_deploy.predict import Classifier, predict_paths
from resnext_deploy.web.ortweb import OrtWeb, find_ort_web
from resnext_deploy.web.site import WebConfig, write_site
from tests.hostile_files import write_bomb_png
from tests.photos import colour_photos
from tests.web.browser import CHROMIUM, run_selftest

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)"
)
PHOTOS = [
    "china.png",
    "flower.png",
    "china.jpg",
    "flower-portrait.png",
    "china-odd.png",
    "flower-exif-rotated.jpg",
]
EXIF_ORIENTATION = 0x0112
BAD = ["not-an-image.png", "bomb.png"]


@functools.cache
def ort_web() -> OrtWeb:
    try:
        return find_ort_web()  # npm installs the pinned package into the cache on first use
    except ConfigError as exc:
        pytest.skip(f"onnxruntime-web is not available: {exc}")


def write_images(folder: Path) -> None:
    """Colour photos as PNG and JPEG (landscape, portrait, odd size), a text file named .png and
    a 30000 x 30000 PNG bomb."""
    folder.mkdir()
    photos = colour_photos()
    Image.fromarray(photos["china 427x640"]).save(folder / "china.png")
    Image.fromarray(photos["flower 427x640"]).save(folder / "flower.png")
    Image.fromarray(photos["china 427x640"]).save(folder / "china.jpg", quality=90)
    Image.fromarray(photos["flower portrait 640x427"]).save(folder / "flower-portrait.png")
    Image.fromarray(photos["china 401x533"]).save(folder / "china-odd.png")
    # A camera's portrait JPEG: stored landscape, tagged "rotate 90". Browsers turn it when they
    # decode; Pillow, and so predict, classify the stored pixels: the page must too.
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(photos["flower 427x640"]).save(folder / "flower-exif-rotated.jpg", exif=exif)
    (folder / "not-an-image.png").write_text("this is text, not a PNG\n")
    write_bomb_png(folder / "bomb.png")


def page_results(export: Path, site: Path, variant: Variant) -> dict[str, Any]:
    write_site(export, site, WebConfig(variant=variant, ort_web=ort_web().dist))
    write_images(site / "selftest")
    order = [*PHOTOS[:2], *BAD, *PHOTOS[2:]]  # the page must keep working after the bad files
    return run_selftest(site, [f"selftest/{name}" for name in order])


def predict_reference(export: Path, folder: Path) -> dict[str, Any]:
    with Classifier(export / Variant.FP32.file) as classifier:
        result = predict_paths(classifier, [folder / n for n in PHOTOS], top_k=5)
    return {Path(p.file).name: p for p in result.predictions}


def compare(page: dict[str, Any], reference: dict[str, Any]) -> float:
    """Top-5 labels equal for every photo; returns the largest probability difference."""
    worst = 0.0
    by_file = {Path(r["file"]).name: r for r in page["results"]}
    for name, expected in reference.items():
        got = by_file[name]
        assert got["error"] is None, (name, got["error"])
        assert got["labels"] == list(expected.labels), name
        diff = np.abs(np.asarray(got["probabilities"]) - np.asarray(expected.probabilities))
        worst = max(worst, float(diff.max()))
    return worst


def assert_bad_files_refused(page: dict[str, Any]) -> None:
    by_file = {Path(r["file"]).name: r for r in page["results"]}
    assert by_file["not-an-image.png"]["error"], by_file["not-an-image.png"]
    assert "pixels" in by_file["bomb.png"]["error"], by_file["bomb.png"]
    assert len(page["results"]) == len(PHOTOS) + len(BAD)


def test_the_fp32_page_classifies_the_photos_as_predict_does(
    tiny_preprocess_export: Path, tmp_path: Path
) -> None:
    page = page_results(tiny_preprocess_export, tmp_path / "site", Variant.FP32)
    assert page["variant"] == "fp32" and page["engine"] == "wasm"
    meta = json.loads((tmp_path / "site" / "model.json").read_text())
    assert page["sha256"] == meta["sha256"] and page["sha256_verified"]
    reference = predict_reference(tiny_preprocess_export, tmp_path / "site" / "selftest")
    assert compare(page, reference) <= 1e-4
    assert_bad_files_refused(page)
    # what it loaded came from its own folder: the model, onnxruntime-web and its scripts
    assert {"/model.onnx", "/ort/ort.min.js", "/ort/ort-wasm-simd-threaded.jsep.wasm"} <= set(
        page["requested"]
    )


def test_the_uint8_page_feeds_rgb_bytes_to_the_preprocessing_graph(
    tiny_preprocess_export: Path, tmp_path: Path
) -> None:
    page = page_results(tiny_preprocess_export, tmp_path / "site", Variant.PREPROCESS)
    assert page["variant"] == "preprocess"
    reference = predict_reference(tiny_preprocess_export, tmp_path / "site" / "selftest")
    assert compare(page, reference) <= 1e-4
    assert_bad_files_refused(page)
