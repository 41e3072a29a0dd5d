"""onnxruntime-web's files, from the pinned npm package: found in a folder the user names, or
installed once with npm into this tool's cache. Never a CDN: the page must work offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from resnext_deploy.errors import ConfigError

ORT_WEB_VERSION = "1.31.1"
PACKAGE = "onnxruntime-web"
# dist file -> name in the site. ``.mjs`` becomes ``.js``, so that every static server sends a
# JavaScript MIME type (module scripts are refused otherwise); the page names the wasm loader
# explicitly (``env.wasm.wasmPaths``), so the renaming breaks no import.
SCRIPT = "ort.min.js"
WASM_LOADER = "ort-wasm-simd-threaded.jsep.js"
WASM_BINARY = "ort-wasm-simd-threaded.jsep.wasm"
SITE_FILES = {
    "ort.min.mjs": SCRIPT,
    "ort-wasm-simd-threaded.jsep.mjs": WASM_LOADER,
    "ort-wasm-simd-threaded.jsep.wasm": WASM_BINARY,
}
NPM_TIMEOUT_S = 600


@dataclass(frozen=True)
class OrtWeb:
    """A checked ``dist`` folder of onnxruntime-web at :data:`ORT_WEB_VERSION`."""

    dist: Path
    version: str

    def files(self) -> dict[str, Path]:
        """Site name -> the dist file it is copied from."""
        return {site: self.dist / name for name, site in SITE_FILES.items()}


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "resnext-deploy" / f"{PACKAGE}-{ORT_WEB_VERSION}"


def find_ort_web(folder: Path | None = None, install: bool = True) -> OrtWeb:
    """The package in ``folder`` (its root, its ``dist`` or a ``node_modules`` holding it), else
    the cached install, else (with ``install``) ``npm install`` into the cache. Raises
    :class:`ConfigError` naming what to do when none is usable."""
    if folder is not None:
        return _checked(_package_root(folder), f"--ort-web {folder}")
    cached = cache_dir() / "node_modules" / PACKAGE
    if not cached.is_dir():
        if not install:
            raise ConfigError(f"{PACKAGE} {ORT_WEB_VERSION} is not installed in {cache_dir()}")
        _install_into_cache()
    return _checked(cached, str(cached))


def _install_into_cache() -> None:
    """Install beside the cache folder, then rename it into place: an interrupted install never
    leaves a half-filled cache that later runs would take for the package."""
    import tempfile

    target = cache_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        npm_install(staging)
        if not target.exists():
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def npm_install(prefix: Path) -> None:
    """``npm install`` the pinned package into ``prefix`` (no install scripts run)."""
    npm = shutil.which("npm")
    if npm is None:
        raise ConfigError(
            f"the page needs {PACKAGE} {ORT_WEB_VERSION} from npm, and npm is not installed: "
            f"install Node.js/npm, or pass --ort-web with the folder of that package"
        )
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "package.json").write_text(json.dumps({"private": True}))
    command = [npm, "install", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix"]
    try:
        proc = subprocess.run(
            [*command, str(prefix), f"{PACKAGE}@{ORT_WEB_VERSION}"],
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(f"npm install {PACKAGE} took over {NPM_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"npm install {PACKAGE}@{ORT_WEB_VERSION} failed: {last}")


def _package_root(folder: Path) -> Path:
    for candidate in (folder, folder.parent, folder / "node_modules" / PACKAGE):
        if (candidate / "package.json").is_file() and (candidate / "dist").is_dir():
            return candidate
    raise ConfigError(f"{folder} is not the {PACKAGE} package (no package.json beside dist/)")


def _checked(root: Path, where: str) -> OrtWeb:
    try:
        version = str(json.loads((root / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{where}: no readable {PACKAGE} package.json") from None
    if version != ORT_WEB_VERSION:
        raise ConfigError(
            f"{where} holds {PACKAGE} {version}; the page is built and tested with "
            f"{ORT_WEB_VERSION}"
        )
    found = OrtWeb(root / "dist", version)
    missing = [p.name for p in found.files().values() if not p.is_file()]
    if missing:
        raise ConfigError(f"{where}: {PACKAGE} lacks {', '.join(missing)}")
    return found
