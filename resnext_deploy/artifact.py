"""The export directory's format in one place: file names, tensor names and types, variants,
tolerances, the manifest, and the name a served export goes by.

An export directory holds ``weights.pt``, ``model.torchscript.pt``, ``model.onnx``,
``parity.json`` (the core files, always present), any :class:`Variant` files and
``manifest.json``, which lists every one of them with its sha256 and size. :func:`open_artifact`
refuses a directory whose manifest leaves out a core file or whose files do not match, and
reports files on disk that the manifest does not list (they are never used).

Ground floor: torch-free and onnx-free, so a serving process can check an artifact before it
loads anything.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from resnext_deploy.errors import ArtifactError, ConfigError
from resnext_deploy.fileio import atomic_write_text, sha256_of
from resnext_deploy.recommendation import Pick, Recommendation
from resnext_deploy.spec import ModelSpec
from resnext_deploy.validate import load_json, regular_file

MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.pt"
TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
PARITY_FILE = "parity.json"
CORE_FILES = (WEIGHTS_FILE, TORCHSCRIPT_FILE, ONNX_FILE, PARITY_FILE)
FORMAT_VERSION = 1
# Extra files inside the TorchScript archive.
TORCHSCRIPT_SPEC_EXTRA = "spec.json"
TORCHSCRIPT_VERSIONS_EXTRA = "versions.json"

# ONNX names every variant shares (the preprocessing graph's input is ``image``).
INPUT_NAME = "input"
IMAGE_INPUT_NAME = "image"
OUTPUT_NAME = "logits"
PROBABILITIES_NAME = "probabilities"  # the preprocessing graph's second output
BATCH_AXIS = "batch"
# ONNX element types (as onnx's TensorProto names them, lower case, and as onnxruntime writes
# them inside ``tensor(...)``) -> KServe v2 datatypes. Triton's config names are these with a
# ``TYPE_`` prefix (``TYPE_FP32``), so both the Triton writer and the server read this table.
ONNX_TO_V2 = {
    "float": "FP32",
    "float16": "FP16",
    "double": "FP64",
    "uint8": "UINT8",
    "int8": "INT8",
    "int32": "INT32",
    "int64": "INT64",
    "bool": "BOOL",
}
# A served model's name is one URL path segment, one Ray deployment name and one Triton model
# folder: nothing a config quote, a URL or a shell could misread.
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, kw_only=True)
class Tolerance:
    """Parity pass criteria (defaults: fp32). ``max_rel`` is max|diff| / max|reference|;
    ``tie_margin``: a top-1 flip between classes whose reference logits are closer than this is
    a tie, not a failure."""

    max_rel: float = 1e-4
    tie_margin: float = 1e-3
    min_cosine: float = 0.99999
    min_top1: float = 1.0

    @property
    def checks_error(self) -> bool:
        return math.isfinite(self.max_rel)


FP32_TOLERANCE = Tolerance()
# fp16 keeps ~3 decimal digits: errors of 1e-3 of the logit range are expected, and classes whose
# logits are that close may swap.
FP16_TOLERANCE = Tolerance(max_rel=1e-2, tie_margin=5e-2, min_cosine=0.9995, min_top1=1.0)
# int8 is judged by top-1 agreement on real held-out images at export; parity only checks that it
# stays the same function in direction. Its random parity inputs lie far outside the calibrated
# activation ranges, where int8 clips: the demo's digits model measured cosine 0.949 there while
# agreeing with fp32 on >= 99% of held-out digits, so the direction check is cosine >= 0.9.
INT8_TOLERANCE = Tolerance(
    max_rel=float("inf"), tie_margin=float("inf"), min_cosine=0.9, min_top1=0.0
)


class InputFormat(StrEnum):
    """What a variant's graph takes as input."""

    NORMALIZED = "float32 NCHW, resized, cropped and normalised"
    UINT8_IMAGE = "uint8 NHWC RGB, resized and cropped to input_size"


class Precision(StrEnum):
    """Numeric precision of an exported ONNX model (fp32 is always written)."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"

    @property
    def variant(self) -> Variant:
        return Variant(self.value)


class Variant(StrEnum):
    """An ONNX file of the export; each knows its file name, tolerance and input format."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    PREPROCESS = "preprocess"

    @property
    def file(self) -> str:
        return _VARIANT_FILES[self]

    @property
    def tolerance(self) -> Tolerance:
        return {Variant.FP16: FP16_TOLERANCE, Variant.INT8: INT8_TOLERANCE}.get(
            self, FP32_TOLERANCE
        )

    @property
    def input_format(self) -> InputFormat:
        return InputFormat.UINT8_IMAGE if self is Variant.PREPROCESS else InputFormat.NORMALIZED

    @property
    def input_name(self) -> str:
        return IMAGE_INPUT_NAME if self is Variant.PREPROCESS else INPUT_NAME

    @property
    def suffix(self) -> str:
        """Backend-name suffix: ``onnxruntime-cpu`` + ``-fp16`` etc. (fp32 has none)."""
        return {Variant.FP32: "", Variant.PREPROCESS: "-preproc"}.get(self, f"-{self.value}")


_VARIANT_FILES = {
    Variant.FP32: ONNX_FILE,
    Variant.FP16: "model.fp16.onnx",
    Variant.INT8: "model.int8.onnx",
    Variant.PREPROCESS: "model.preprocess.onnx",
}


def check_model_name(name: str, what: str = "model name") -> str:
    """Return ``name``, or raise :class:`ConfigError` (``what`` names the kind of name): letters,
    digits, ``_ . -`` only, no ``..``, no path separators or quotes, at most 128 characters."""
    if not MODEL_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"{what} {name!r} is not allowed: use letters, digits, '_', '-' and '.' "
            "(no '/', '..' or quotes; at most 128 characters, not starting with '.' or '-')"
        )
    return name


def model_name_for(arch: str, what: str = "model name") -> str:
    """The default served name of an ``arch``: characters a model name cannot hold become
    ``_``. Raises :class:`ConfigError` where the result is still not a model name."""
    return check_model_name(re.sub(r"[^A-Za-z0-9_.-]", "_", arch), what)


def parse_variant(text: str) -> Variant:
    try:
        return Variant(text.strip().lower())
    except ValueError:
        raise ConfigError(
            f"unknown variant {text!r}; choose from: {', '.join(v.value for v in Variant)}"
        ) from None


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: the spec, tool versions and every artifact's sha256 and size; and,
    once measured, which engine runs which variant fastest (``recommendation``)."""

    spec: ModelSpec
    versions: dict[str, str]
    files: dict[str, FileEntry]
    format: int = FORMAT_VERSION
    recommendation: Recommendation | None = None

    @classmethod
    def build(
        cls, directory: Path, spec: ModelSpec, versions: dict[str, str], files: list[str]
    ) -> Manifest:
        """Hash ``files`` (names relative to ``directory``)."""
        return cls(
            spec,
            dict(versions),
            {
                name: FileEntry(sha256_of(directory / name), (directory / name).stat().st_size)
                for name in sorted(files)
            },
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "spec": self.spec.to_dict(),
            "versions": self.versions,
            "files": {n: {"sha256": e.sha256, "bytes": e.bytes} for n, e in self.files.items()},
        } | ({"recommendation": self.recommendation.to_dict()} if self.recommendation else {})

    def write(self, directory: Path) -> Path:
        return atomic_write_text(directory / MANIFEST_FILE, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """Parse and validate the shape of ``directory/manifest.json``; raises
        :class:`ArtifactError` saying what is wrong with it."""
        path = directory / MANIFEST_FILE
        if not path.exists():
            raise ArtifactError(
                f"{directory} has no {MANIFEST_FILE}; is it a resnext-deploy export?"
            )
        # bounded in size, depth and integer length: a crafted manifest is an error, not a hang
        data = load_json(path, "manifest", ArtifactError)
        if not isinstance(data, dict):
            raise ArtifactError(f"{path} must hold a JSON object")
        files, spec = data.get("files"), data.get("spec")
        if not isinstance(files, dict):
            raise ArtifactError(f"{path}: 'files' must be an object of name -> sha256 and bytes")
        if not isinstance(spec, dict):
            raise ArtifactError(f"{path}: 'spec' must be an object")
        entries = {}
        for name, entry in files.items():
            ok = (
                isinstance(entry, dict)
                and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("bytes"), int)
                and not isinstance(entry.get("bytes"), bool)
            )
            if not ok:
                raise ArtifactError(f"{path}: entry {name!r} needs a 'sha256' string and 'bytes'")
            if Path(name).name != name or name in (".", ".."):
                raise ArtifactError(f"{path}: entry {name!r} is not a plain file name")
            entries[name] = FileEntry(entry["sha256"], entry["bytes"])
        versions = data.get("versions") or {}
        if not isinstance(versions, dict):
            raise ArtifactError(f"{path}: 'versions' must be an object")
        try:
            parsed_spec = ModelSpec.from_dict(spec)
            if parsed_spec.arch_config:
                parsed_spec.architecture()  # a malformed architecture fails here, not mid-verify
        except (ConfigError, ArtifactError) as exc:
            raise ArtifactError(f"{path}: invalid spec ({exc})") from None
        fmt = data.get("format", FORMAT_VERSION)
        if not isinstance(fmt, int) or isinstance(fmt, bool) or not 1 <= fmt <= FORMAT_VERSION:
            raise ArtifactError(
                f"{path}: export format {fmt!r} is not one this resnext-deploy reads "
                f"(1..{FORMAT_VERSION}); export again, or upgrade resnext-deploy"
            )
        raw = data.get("recommendation")
        recommendation = None if raw is None else Recommendation.from_dict(raw)
        versions = {str(k): str(v) for k, v in versions.items()}
        return cls(parsed_spec, versions, entries, fmt, recommendation)

    def check(self, directory: Path, *, hashes: bool = True) -> list[str]:
        """Check completeness and integrity; return the files on disk the manifest leaves out.

        Raises :class:`ArtifactError` for a core file the manifest does not list, and for any
        listed file that is missing, of the wrong size or (with ``hashes``) the wrong sha256.
        """
        missing = [name for name in CORE_FILES if name not in self.files]
        if missing:
            raise ArtifactError(
                f"{directory / MANIFEST_FILE} does not list {', '.join(missing)}: the manifest is "
                "incomplete or was edited; re-export"
            )
        for name, entry in self.files.items():
            check_file(directory / name, entry, hashes=hashes)
        return sorted(
            p.name
            for p in directory.iterdir()
            if p.name not in self.files and p.name != MANIFEST_FILE
        )


def record_recommendation(artifact: Artifact, recommendation: Recommendation) -> Path:
    """Write ``recommendation`` into the export's manifest (atomically, every other field as
    it was): what ``--engine auto`` follows. Every pick must name a variant the export holds."""
    for pick in recommendation.picks.values():
        artifact.require(Variant(pick.variant))
    manifest = Manifest.read(artifact.path)  # as on disk now, not as it was opened
    return replace(manifest, recommendation=recommendation).write(artifact.path)


def check_file(path: Path, entry: FileEntry, *, hashes: bool = True) -> None:
    """Raise :class:`ArtifactError` naming ``path`` unless it is a regular file of the size (and
    with ``hashes``, the sha256) that its manifest ``entry`` records; a FIFO or a device in its
    place is refused before anything reads it."""
    if not path.exists():
        raise ArtifactError(f"{path} is listed in the manifest but missing")
    regular_file(path, "export file", ArtifactError)
    size = path.stat().st_size
    if size != entry.bytes:
        raise ArtifactError(
            f"{path} is {size} bytes, the manifest says {entry.bytes}: "
            "truncated or replaced; re-export it"
        )
    if hashes and sha256_of(path) != entry.sha256:
        raise ArtifactError(
            f"{path} does not match its sha256 in the manifest: modified after export; re-export it"
        )


@dataclass(frozen=True)
class Artifact:
    """A checked export directory. Only files the manifest lists are ever used."""

    path: Path
    manifest: Manifest
    unlisted: tuple[str, ...] = field(default_factory=tuple)

    @property
    def spec(self) -> ModelSpec:
        return self.manifest.spec

    @property
    def versions(self) -> dict[str, str]:
        return dict(self.manifest.versions)

    def file(self, name: str | Variant) -> Path:
        return self.path / (name.file if isinstance(name, Variant) else name)

    def has(self, name: str | Variant) -> bool:
        return (name.file if isinstance(name, Variant) else name) in self.manifest.files

    @property
    def variants(self) -> tuple[Variant, ...]:
        """The ONNX variants this export holds, fp32 first."""
        return tuple(v for v in Variant if self.has(v))

    def recommended(self, batch_size: int) -> tuple[int, Pick]:
        """What ``--engine auto`` runs for batches of ``batch_size``: the recorded pick (see
        :meth:`Recommendation.for_batch`) with the batch size it was measured at. Raises
        :class:`ConfigError` when nothing was measured: ``auto`` never guesses."""
        record = self.manifest.recommendation
        if record is None:
            raise ConfigError(
                f"--engine auto runs what {self.path / MANIFEST_FILE} records as measured "
                "fastest, and it records nothing yet: measure it with 'resnext-deploy bench "
                "EXPORT --engines --record' on the machine that will run it, or name an engine"
            )
        return record.for_batch(batch_size)

    def require(self, variant: Variant) -> Path:
        """The file of ``variant``; raises :class:`ArtifactError` if the export lacks it."""
        if not self.has(variant):
            held = ", ".join(v.value for v in self.variants)
            raise ArtifactError(
                f"{self.path} has no {variant.value} variant (it has {held}); export the model "
                "again with that variant"
            )
        return self.file(variant)


def open_artifact(directory: str | Path, *, check_hashes: bool = True) -> Artifact:
    """Read ``manifest.json`` and check the directory against it (see :meth:`Manifest.check`).

    Raises :class:`ArtifactError` naming the first missing, unlisted core, truncated or modified
    file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"export directory not found: {directory}")
    manifest = Manifest.read(directory)
    unlisted = manifest.check(directory, hashes=check_hashes)
    return Artifact(directory, manifest, tuple(unlisted))


def open_model_file(path: str | Path, default: str = ONNX_FILE) -> tuple[Path, Artifact | None]:
    """The model file a consumer given ``path`` loads, with the export it belongs to.

    An export folder gives its ``default`` file; a file in a folder that holds a manifest is one
    of that export's files. Either way the export is opened as every consumer opens it (every
    file's size and sha256 checked, see :func:`open_artifact`). A file anywhere else, or a
    folder without a manifest (its ``default`` file), stands alone (``None``): there is nothing
    to check it against. Raises :class:`ArtifactError` for an export that does not check out,
    or a file in it that its manifest does not list (only listed files are ever used).
    """
    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST_FILE).exists():
            return path / default, None
        return path / default, open_artifact(path)
    # a link to an export's file is that export's file
    for home, name in ((path.parent, path.name), (path.resolve().parent, path.resolve().name)):
        if (home / MANIFEST_FILE).exists():
            artifact = open_artifact(home)
            if not artifact.has(name):
                raise ArtifactError(
                    f"{path} is not listed in {home / MANIFEST_FILE}, so it is not part of the "
                    "export; pass a file the manifest lists, or the export folder"
                )
            return path, artifact
    return path, None
