"""Which onnxruntime distributions are installed, in which folders, and which one is imported.

onnxruntime, onnxruntime-gpu, onnxruntime-openvino and onnxruntime-directml all install the
module ``onnxruntime``. Two of them in one folder overwrite each other's files, and what is left
is a mix of both: that is a broken install. One in a folder later on ``sys.path`` (a system
site-packages behind a virtualenv or a ``--target`` folder) is only shadowed by the first, and
Python imports the first; the check says which that is.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from resnext_deploy.doctor.report import Check, CheckStatus

ORT_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")


@dataclass(frozen=True, kw_only=True)
class OrtInstall:
    """One installed onnxruntime distribution and the folder it was installed into."""

    name: str
    version: str
    location: str

    def __str__(self) -> str:
        return f"{self.name} {self.version} in {self.location}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "location": self.location}


def onnxruntime_installs(search_path: Sequence[str] | None = None) -> tuple[OrtInstall, ...]:
    """Every distribution of :data:`ORT_PACKAGES` under ``search_path`` (default ``sys.path``),
    in path order, each once (a folder listed twice is one folder)."""
    path = list(sys.path if search_path is None else search_path)
    found: dict[tuple[str, str, str], OrtInstall] = {}
    for dist in metadata.distributions(path=path):
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
        if name not in ORT_PACKAGES:
            continue
        location = os.path.realpath(str(dist.locate_file("")))
        install = OrtInstall(name=name, version=dist.version, location=location)
        found.setdefault((name, install.version, location), install)
    return tuple(found.values())


def imported_location() -> str | None:
    """The folder the ``onnxruntime`` module is imported from (the folder holding the package,
    as found on ``sys.path``), or ``None`` when it cannot be imported."""
    try:
        import onnxruntime
    except ImportError:
        return None
    package = os.path.dirname(os.path.abspath(onnxruntime.__file__ or ""))
    return os.path.realpath(os.path.dirname(package))


def one_package_check(
    search_path: Sequence[str] | None = None, imported: str | None = None
) -> Check:
    """FAIL when two onnxruntime distributions share one folder; PASS otherwise, naming the one
    imported (``imported``: its folder, default :func:`imported_location`) and any it shadows."""
    installs = onnxruntime_installs(search_path)
    imported = imported or imported_location()
    folders: dict[str, list[OrtInstall]] = {}
    for install in installs:
        folders.setdefault(install.location, []).append(install)
    clashes = {f: sorted(group, key=str) for f, group in folders.items() if len(group) > 1}
    shared = [
        f"{' and '.join(f'{i.name} {i.version}' for i in group)} share {folder}"
        for folder, group in clashes.items()
    ]
    detail = "; ".join(shared)
    if shared:
        detail += (
            ": each writes the module onnxruntime there, over the other's files; uninstall all "
            "of them, then install one"
        )
    detail = "; ".join(filter(None, [detail, _imported_text(installs, imported)]))
    return Check(
        section="onnxruntime",
        name="one package",
        status=CheckStatus.FAIL if clashes else CheckStatus.PASS,
        detail=detail,
        data={
            "installed": {i.name: i.version for i in reversed(installs)},  # first on path wins
            "installs": [i.to_dict() for i in installs],
            "imported_from": imported,
            "shared_folders": sorted(clashes),
        },
    )


def _imported_text(installs: Sequence[OrtInstall], imported: str | None) -> str:
    if imported is None:
        return "onnxruntime cannot be imported"
    here = [i for i in installs if i.location == imported]
    others = [str(i) for i in installs if i.location != imported]
    what = " and ".join(f"{i.name} {i.version}" for i in here) or "no recorded distribution"
    text = f"imported: {what} in {imported}"
    if others:
        text += f"; not imported (elsewhere on sys.path, so harmless): {', '.join(others)}"
    return text
