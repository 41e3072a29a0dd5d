"""Install layouts users have, built in temporary folders: onnxruntime imported from a folder
apart from the nvidia-* wheels (a ``pip --target`` install), and distributions recorded by
their dist-info folders alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]


def onnxruntime_apart(folder: Path) -> Path:
    """``folder`` holding only the installed onnxruntime package (a link to it), so that
    onnxruntime's own ``../nvidia`` is ``folder/nvidia``, which does not exist; the nvidia-*
    wheels stay where they are, further down ``sys.path``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "onnxruntime").symlink_to(Path(ort.__file__).parent, target_is_directory=True)
    return folder


def run_torch_free(code: str, pythonpath: Path) -> dict:
    """Run ``code`` (which prints one JSON object last) in a fresh interpreter that cannot import
    torch, with ``pythonpath`` first on ``sys.path``; returns that object."""
    prelude = "import sys; sys.modules['torch'] = None\n"
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}  # wheels only
    done = subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(pythonpath)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def fake_distribution(folder: Path, name: str, version: str) -> Path:
    """A dist-info folder for ``name`` ``version`` in ``folder`` (metadata only, no module)."""
    dist = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "RECORD").write_text("")
    return dist
