"""``resnext-deploy web``: an export as a static folder that classifies images in the browser
with onnxruntime-web (WebAssembly, or WebGPU where the browser has it). The image never leaves
the visitor's machine; the folder works from any static file server, offline."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnext_deploy.artifact import PROBABILITIES_NAME, Artifact, Variant, open_artifact
from resnext_deploy.errors import ArtifactError, DeployError
from resnext_deploy.export.atomic import atomic_directory, check_destination
from resnext_deploy.runtime.ort import check_onnx_file
from resnext_deploy.validate import load_json
from resnext_deploy.web.ortweb import SCRIPT, WASM_BINARY, WASM_LOADER, OrtWeb, find_ort_web

STATIC = Path(__file__).parent / "static"
SITE_FORMAT = 1
MODEL_FILE = "model.onnx"
META_FILE = "model.json"
ORT_FOLDER = "ort"
SITE = "web site"  # what --force may replace, in messages


@dataclass(frozen=True, kw_only=True)
class WebConfig:
    """``variant``: the ONNX file the page runs [default: the preprocessing graph when the export
    has it, else fp32]. ``ort_web``: a folder holding the onnxruntime-web package [default: this
    tool's cache, filled by npm on first use]."""

    variant: Variant | None = None
    overwrite: bool = False
    ort_web: Path | None = None


@dataclass(frozen=True)
class WebSite:
    """A written site: where, which variant, and what a visitor downloads."""

    out_dir: Path
    variant: Variant
    model_sha256: str
    ort_web_version: str
    files: dict[str, int] = field(default_factory=dict)  # site path -> bytes
    variant_bytes: dict[str, int] = field(default_factory=dict)  # every variant the export has

    @property
    def download_bytes(self) -> int:
        return sum(self.files.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "variant": self.variant.value,
            "model_sha256": self.model_sha256,
            "onnxruntime_web": self.ort_web_version,
            "files": self.files,
            "download_bytes": self.download_bytes,
            "variant_bytes": self.variant_bytes,
        }


def write_site(export_dir: Path, out_dir: Path, config: WebConfig = WebConfig()) -> WebSite:
    """Write the page, the chosen variant, its ``model.json`` and onnxruntime-web's files into
    ``out_dir``, atomically. Raises :class:`ArtifactError` for an export whose manifest does not
    check out, that lacks the variant or whose variant onnxruntime cannot load,
    :class:`ConfigError` when onnxruntime-web cannot be found or installed, or ``out_dir`` is
    taken (``--force`` replaces an earlier site only)."""
    artifact = open_artifact(export_dir)
    variant = choose_variant(artifact, config.variant)
    # a file the browser could not load (garbage with a matching hash, a newer IR) or whose
    # labels are not the manifest's is refused here, not by the visitor's browser
    check_onnx_file(artifact.file(variant), spec=artifact.spec)
    force = config.overwrite
    # before npm may spend minutes installing; atomic_directory checks again when it claims
    check_destination(out_dir, overwrite=force, replaceable=is_site, what=SITE)
    ort = find_ort_web(config.ort_web)
    with atomic_directory(out_dir, overwrite=force, replaceable=is_site, what=SITE) as stage:
        _copy_page(stage)
        _copy_model(artifact, variant, stage / MODEL_FILE)
        (stage / ORT_FOLDER).mkdir()
        for name, source in ort.files().items():
            shutil.copyfile(source, stage / ORT_FOLDER / name)
        meta = site_metadata(artifact, variant, ort)
        (stage / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        files = {str(p.relative_to(stage)): p.stat().st_size for p in _files(stage)}
    return WebSite(
        out_dir,
        variant,
        meta["sha256"],
        ort.version,
        files,
        {v.value: artifact.manifest.files[v.file].bytes for v in artifact.variants},
    )


def choose_variant(artifact: Artifact, requested: Variant | None) -> Variant:
    """``requested``, or the preprocessing graph (the page then feeds RGB bytes straight in),
    else fp32. Raises :class:`ArtifactError` naming the variants the export has."""
    if requested is None:
        return Variant.PREPROCESS if artifact.has(Variant.PREPROCESS) else Variant.FP32
    artifact.require(requested)
    return requested


def site_metadata(artifact: Artifact, variant: Variant, ort: OrtWeb) -> dict[str, Any]:
    """What the page reads before it loads the model: names, preprocessing, labels, hash."""
    from PIL import Image

    spec = artifact.spec
    entry = artifact.manifest.files[variant.file]
    uint8 = variant is Variant.PREPROCESS
    return {
        "format": SITE_FORMAT,
        "model": MODEL_FILE,
        "variant": variant.value,
        "input_name": variant.input_name,
        "input_format": "uint8-nhwc" if uint8 else "float32-nchw",
        "output_name": "logits",
        "probabilities_name": PROBABILITIES_NAME if uint8 else None,
        "input_size": spec.input_size,
        "resize": spec.resize,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "labels": list(spec.labels()),
        "arch": spec.arch,
        "sha256": entry.sha256,
        "bytes": entry.bytes,
        "max_pixels": Image.MAX_IMAGE_PIXELS,  # predict's decompression-bomb limit
        "onnxruntime_web": ort.version,
        "ort": {
            "script": f"{ORT_FOLDER}/{SCRIPT}",
            "wasm": {"mjs": f"{ORT_FOLDER}/{WASM_LOADER}", "wasm": f"{ORT_FOLDER}/{WASM_BINARY}"},
        },
    }


def _copy_model(artifact: Artifact, variant: Variant, target: Path) -> None:
    """Copy the variant's file and check the copy against the manifest: the page shows this
    hash as the model's identity, so it must be the hash of what it loads."""
    from resnext_deploy.fileio import sha256_of

    shutil.copyfile(artifact.file(variant), target)
    if sha256_of(target) != artifact.manifest.files[variant.file].sha256:
        raise ArtifactError(f"{artifact.file(variant)} changed while it was copied")


def is_site(folder: Path) -> bool:
    """What ``--force`` may replace: a folder this command wrote (its ``model.json`` says so)."""
    try:  # bounded: a crafted model.json (a FIFO, JSON nested 10,000 deep) is just not ours
        meta = load_json(folder / META_FILE, "web site metadata", limit=1 << 20)
    except DeployError:
        return False
    return isinstance(meta, dict) and meta.get("format") == SITE_FORMAT and "ort" in meta


def _copy_page(stage: Path) -> None:
    for source in sorted(STATIC.iterdir()):
        if source.is_file() and not source.name.startswith("."):
            shutil.copyfile(source, stage / source.name)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())
