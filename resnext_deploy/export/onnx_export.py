"""ONNX export with the torch.export-based exporter: one file, named I/O, dynamic batch axis."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnext_deploy.artifact import BATCH_AXIS, INPUT_NAME, OUTPUT_NAME
from resnext_deploy.errors import ArtifactError, ConfigError, ExportError, first_line
from resnext_deploy.spec import SPEC_KEY, ModelSpec

DEFAULT_OPSET = 20
MIN_OPSET = 18


@dataclass(frozen=True)
class ConvSummary:
    """How many ``Conv`` nodes an ONNX graph has, by ``group`` attribute."""

    by_group: dict[int, int]

    @property
    def total(self) -> int:
        return sum(self.by_group.values())

    def grouped(self) -> int:
        return sum(n for g, n in self.by_group.items() if g > 1)


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    spec: ModelSpec,
    versions: dict[str, str],
    opset: int = DEFAULT_OPSET,
) -> None:
    """Export ``model`` to a self-contained ONNX file with the spec in ``metadata_props`` and run
    ``onnx.checker`` with ``full_check``. ``example`` must have batch >= 2 so that the batch axis
    is not specialised to 1."""
    import onnx

    check_opset(opset)
    if example.shape[0] < 2:
        raise ExportError("export with an example batch of at least 2 (batch 1 gets specialised)")
    with quiet_exporter():
        try:
            program = torch.onnx.export(
                model.eval(),
                (example,),
                dynamo=True,
                external_data=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: torch.export.Dim(BATCH_AXIS)}},
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
            raise ExportError(f"torch.onnx.export failed: {first_line(exc)}") from None
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    proto = program.model_proto
    produced = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if produced != opset:  # the exporter falls back to its own opset when conversion fails
        raise ExportError(f"the exporter could not produce opset {opset} (it made {produced})")
    set_metadata(proto, spec, versions)
    onnx.save_model(proto, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported ONNX model fails onnx.checker: {exc}") from None


def max_opset() -> int:
    """The newest opset the installed ``onnx`` knows (the exporter converts up to it)."""
    import onnx

    return int(onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> None:
    """Raise :class:`ConfigError` for an opset the exporter cannot honour (it would silently
    write another one)."""
    if not MIN_OPSET <= opset <= max_opset():
        raise ConfigError(
            f"opset {opset} cannot be exported: the exporter supports opsets {MIN_OPSET} to "
            f"{max_opset()}"
        )


def set_metadata(proto: Any, spec: ModelSpec, versions: dict[str, str]) -> None:
    """Write the spec both as one JSON entry and as flat keys a human or another language reads."""
    entries = {
        SPEC_KEY: spec.to_json(),
        "arch": spec.arch,
        "num_classes": str(spec.num_classes),
        "class_names": json.dumps(spec.labels()),
        "input_size": str(spec.input_size),
        "resize": str(spec.resize),
        "mean": json.dumps(list(spec.mean)),
        "std": json.dumps(list(spec.std)),
        "color": "RGB",
        "layout": "NCHW",
        "source_sha256": spec.source_sha256,
        "versions": json.dumps(versions),
    }
    del proto.metadata_props[:]
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    proto.producer_name = "resnext-deploy"
    proto.doc_string = f"{spec.arch} ({spec.num_classes} classes) exported by resnext-deploy"


def read_onnx_spec(path: Path) -> ModelSpec:
    """The :class:`ModelSpec` stored in an ONNX file's metadata (no torch, no weights loaded)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have no common type
        raise ArtifactError(f"{path} is not a readable ONNX model ({exc})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if SPEC_KEY not in props:
        raise ArtifactError(f"{path} carries no resnext-deploy spec in its metadata")
    return ModelSpec.from_json(props[SPEC_KEY])


def conv_summary(path_or_proto: Any) -> ConvSummary:
    import onnx

    proto = (
        onnx.load(str(path_or_proto)) if isinstance(path_or_proto, str | Path) else path_or_proto
    )
    groups: Counter[int] = Counter()
    for node in proto.graph.node:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            groups[group] += 1
    return ConvSummary(dict(sorted(groups.items())))


@contextlib.contextmanager
def quiet_exporter():  # noqa: ANN202
    """The exporter prints progress lines and warnings; keep the user's terminal for our output."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
