"""``resnext-deploy web``: the folder it writes, checked against the export it came from."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resnext_deploy.artifact import Manifest, Variant
from resnext_deploy.cli import app
from resnext_deploy.errors import ArtifactError, ConfigError
from resnext_deploy.web import ortweb
from resnext_deploy.web import site as site_module
from resnext_deploy.web.site import STATIC, WebConfig, write_site

runner = CliRunner()


@pytest.fixture
def fake_ort_web(tmp_path: Path) -> Path:
    """A stand-in onnxruntime-web package: the pinned version's package.json and dist files."""
    root = tmp_path / "node_modules" / "onnxruntime-web"
    (root / "dist").mkdir(parents=True)
    (root / "package.json").write_text(json.dumps({"version": ortweb.ORT_WEB_VERSION}))
    for name in ortweb.SITE_FILES:
        (root / "dist" / name).write_bytes(name.encode() * 3)
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_site_holds_the_page_the_model_the_runtime_and_what_the_page_needs(
    tiny_preprocess_export: Path, fake_ort_web: Path, tmp_path: Path
) -> None:
    site = write_site(tiny_preprocess_export, tmp_path / "site", WebConfig(ort_web=fake_ort_web))
    out = tmp_path / "site"
    assert site.variant is Variant.PREPROCESS  # the default when the export has it
    source = tiny_preprocess_export / Variant.PREPROCESS.file
    assert (out / "model.onnx").read_bytes() == source.read_bytes()
    meta = json.loads((out / "model.json").read_text())
    spec = json.loads((tiny_preprocess_export / "manifest.json").read_text())["spec"]
    assert meta["sha256"] == sha256(out / "model.onnx") == site.model_sha256
    assert meta["input_format"] == "uint8-nhwc" and meta["input_name"] == "image"
    assert meta["probabilities_name"] == "probabilities"
    assert meta["labels"] == [f"c{i}" for i in range(7)]
    assert (meta["input_size"], meta["resize"]) == (spec["input_size"], spec["resize"])
    assert meta["mean"] == spec["mean"] and meta["std"] == spec["std"]
    assert meta["max_pixels"] == 89478485  # Pillow's limit, as predict applies it
    for name, site_name in ortweb.SITE_FILES.items():  # .mjs renamed .js, contents unchanged
        assert (out / "ort" / site_name).read_bytes() == (fake_ort_web / "dist" / name).read_bytes()
    assert meta["ort"]["script"] == "ort/ort.min.js"
    assert all((out / p).is_file() for p in meta["ort"]["wasm"].values())
    for page in (p for p in STATIC.iterdir() if p.is_file()):
        assert (out / page.name).read_bytes() == page.read_bytes()
    assert site.download_bytes == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert set(site.variant_bytes) == {"fp32", "preprocess"}


def test_an_fp32_page_preprocesses_in_the_script(
    tiny_preprocess_export: Path, fake_ort_web: Path, tmp_path: Path
) -> None:
    config = WebConfig(variant=Variant.FP32, ort_web=fake_ort_web)
    write_site(tiny_preprocess_export, tmp_path / "site", config)
    meta = json.loads((tmp_path / "site" / "model.json").read_text())
    assert meta["input_format"] == "float32-nchw" and meta["input_name"] == "input"
    assert meta["probabilities_name"] is None
    assert meta["sha256"] == sha256(tiny_preprocess_export / "model.onnx")


def test_a_variant_the_export_lacks_is_refused_naming_those_it_has(
    tiny_export: Path, fake_ort_web: Path, tmp_path: Path
) -> None:
    config = WebConfig(variant=Variant.INT8, ort_web=fake_ort_web)
    with pytest.raises(ArtifactError, match=r"no int8 variant \(it has fp32\)"):
        write_site(tiny_export, tmp_path / "site", config)
    assert not (tmp_path / "site").exists()


def test_a_tampered_export_is_refused_and_nothing_is_written(
    tiny_export: Path, fake_ort_web: Path, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    data = bytearray((export / "model.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    (export / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.onnx"):
        write_site(export, tmp_path / "site", WebConfig(ort_web=fake_ort_web))
    assert not (tmp_path / "site").exists()
    assert Manifest.read(export).files["model.onnx"].sha256 != sha256(export / "model.onnx")


def test_a_users_folder_is_never_replaced_an_earlier_site_only_with_force(
    tiny_export: Path, fake_ort_web: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for force in (False, True):
        with pytest.raises(ConfigError):
            write_site(tiny_export, mine, WebConfig(ort_web=fake_ort_web, overwrite=force))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    site = tmp_path / "site"
    write_site(tiny_export, site, WebConfig(ort_web=fake_ort_web))
    with pytest.raises(ConfigError):
        write_site(tiny_export, site, WebConfig(ort_web=fake_ort_web))
    write_site(tiny_export, site, WebConfig(ort_web=fake_ort_web, overwrite=True))
    assert (site / "model.json").is_file()


def test_a_taken_folder_is_refused_before_npm_is_asked(
    tiny_export: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_npm(folder: Path | None = None) -> None:
        raise AssertionError("onnxruntime-web was looked for before the folder was checked")

    monkeypatch.setattr(site_module, "find_ort_web", no_npm)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="already exists"):
        write_site(tiny_export, mine)


def test_onnxruntime_web_of_another_version_is_refused(fake_ort_web: Path) -> None:
    (fake_ort_web / "package.json").write_text(json.dumps({"version": "1.20.0"}))
    with pytest.raises(ConfigError, match="holds onnxruntime-web 1.20.0"):
        ortweb.find_ort_web(fake_ort_web)


def test_without_npm_and_without_the_package_the_error_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(ortweb.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="npm is not installed.*--ort-web"):
        ortweb.find_ort_web()
    assert not ortweb.cache_dir().exists()  # no half-filled cache left behind


def test_the_cli_shows_what_a_visitor_downloads(
    tiny_preprocess_export: Path, fake_ort_web: Path, tmp_path: Path
) -> None:
    out = tmp_path / "[red]site"
    args = ["web", str(tiny_preprocess_export), "--out", str(out), "--ort-web", str(fake_ort_web)]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "[red]site" in result.stdout and "preprocess" in result.stdout
    assert "python -m http.server" in result.stdout
    again = runner.invoke(app, [*args, "--force", "--json"])
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert data["variant"] == "preprocess" and data["model_sha256"] == sha256(out / "model.onnx")
