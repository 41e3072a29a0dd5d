"""The engines that run an export's ONNX files: onnxruntime (every provider) and OpenVINO (its
CPU plugin). One factory, so that ``predict``, ``serve``, ``verify`` and ``bench`` build the same
runner for the same choice."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from resnext_deploy.errors import ConfigError
from resnext_deploy.recommendation import Engine
from resnext_deploy.runtime.providers import Provider, SessionConfig

if TYPE_CHECKING:
    from resnext_deploy.runtime.openvino import OpenVinoRunner
    from resnext_deploy.runtime.ort import OrtRunner

    ModelRunner = OrtRunner | OpenVinoRunner


def open_runner(
    model: str | Path | bytes,
    engine: Engine = Engine.ONNXRUNTIME,
    session: SessionConfig | None = None,
    name: str | None = None,
) -> ModelRunner:
    """``model`` on ``engine``. onnxruntime runs on ``session``'s provider; OpenVINO on the CPU
    with ``session``'s intra-op threads (a GPU provider with OpenVINO is refused, never
    ignored)."""
    session = session or SessionConfig()
    if engine is Engine.ONNXRUNTIME:
        from resnext_deploy.runtime.ort import OrtRunner

        return OrtRunner(model, session, name=name)
    if session.provider is not Provider.CPU:
        raise ConfigError(
            f"the OpenVINO engine runs on the CPU here; the {session.provider.value} provider "
            "is onnxruntime's: use --engine onnxruntime with it, or --provider cpu"
        )
    from resnext_deploy.runtime.openvino import OpenVinoConfig, OpenVinoRunner

    return OpenVinoRunner(model, OpenVinoConfig(threads=session.intra_op_threads), name=name)
