"""``manifest.json``: the spec, tool versions and the sha256 of every artifact in an export.

Torch-free, so the embedding path can check an artifact before it runs it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnext_deploy.errors import ArtifactError
from resnext_deploy.spec import ModelSpec

MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
WEIGHTS_FILE = "weights.pt"
PARITY_FILE = "parity.json"
FORMAT_VERSION = 1


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(
    directory: Path, spec: ModelSpec, versions: dict[str, str], files: list[str]
) -> dict[str, Any]:
    """Manifest for ``files`` (names relative to ``directory``)."""
    return {
        "format": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "versions": versions,
        "files": {
            name: {
                "sha256": sha256_of(directory / name),
                "bytes": (directory / name).stat().st_size,
            }
            for name in sorted(files)
        },
    }


@dataclass(frozen=True)
class Artifact:
    """A verified export directory."""

    path: Path
    manifest: dict[str, Any]
    spec: ModelSpec

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def versions(self) -> dict[str, str]:
        return dict(self.manifest.get("versions", {}))

    def has(self, name: str) -> bool:
        return name in self.manifest["files"]


def open_artifact(directory: str | Path, *, check_hashes: bool = True) -> Artifact:
    """Read ``manifest.json`` and check that every listed file exists with its recorded sha256.

    Raises :class:`ArtifactError` naming the first missing, truncated or modified file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"export directory not found: {directory}")
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{directory} has no {MANIFEST}; is it a resnext-deploy export?")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        spec = ModelSpec.from_dict(manifest["spec"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{manifest_path} is corrupt ({exc})") from None
    if check_hashes:
        for name, entry in files.items():
            path = directory / name
            if not path.is_file():
                raise ArtifactError(f"{path} is listed in the manifest but missing")
            size = path.stat().st_size
            if size != entry["bytes"]:
                raise ArtifactError(
                    f"{path} is {size} bytes, the manifest says {entry['bytes']}: "
                    "truncated or replaced; re-export it"
                )
            if sha256_of(path) != entry["sha256"]:
                raise ArtifactError(
                    f"{path} does not match its sha256 in the manifest: modified after export; "
                    "re-export it"
                )
    return Artifact(directory, manifest, spec)
