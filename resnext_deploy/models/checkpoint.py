"""Read user checkpoints safely and turn them into a canonical model plus its :class:`ModelSpec`."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnext_deploy.errors import CheckpointError, ConfigError, first_line
from resnext_deploy.fileio import sha256_of
from resnext_deploy.models.layouts import convert_layout, detect_layout
from resnext_deploy.models.registry import ARCHS, _build_on_meta, build_model
from resnext_deploy.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArchConfig,
    ModelSpec,
    arch_config_from_dict,
    check_spec_field,
)

STRIP_PREFIXES = ("module.", "_orig_mod.")
MAX_LISTED = 6


@dataclass(frozen=True)
class Checkpoint:
    """A state dict as read from disk, with whatever spec the trainer saved beside it."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    sha256: str
    spec: dict[str, Any] | None


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """What the user told us about a checkpoint; ``None`` means infer it. Checked as the spec's
    fields are (:func:`check_spec_field`); an ``arch`` the user names must be registered (a name
    the registry does not know would only label someone else's architecture)."""

    arch: str | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] = ()
    layout: str | None = None
    input_size: int | None = None
    resize: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.arch is not None:
            ARCHS.get(self.arch)  # raises naming the registered architectures
        for name in ("num_classes", "class_names", "input_size", "resize", "mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_spec_field(name, value))


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load a state dict with ``torch.load(weights_only=True)``.

    Accepts a bare state dict or a dict holding one under ``state_dict`` or ``model``; strips
    ``module.``/``_orig_mod.`` prefixes. Raises :class:`CheckpointError` for a missing file, a file
    that is not a checkpoint, or a pickled full model (which could run arbitrary code on load).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    kind = _file_kind(path)
    if kind == "empty":
        raise CheckpointError(f"{path} is empty (0 bytes), not a PyTorch checkpoint")
    if kind == "other":
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint: neither torch.save's zip archive nor a pickle"
        )
    if kind == "pickle":
        raise CheckpointError(
            f"{path} is a pickled Python object, not a state dict: it was written with pickle, "
            "not torch.save, and unpickling it could execute arbitrary code, so resnext-deploy "
            "refuses. Save the weights with `torch.save(model.state_dict(), 'weights.pth')`."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"{path} holds a pickled Python object (a full model?), not a state dict. "
                "Loading it would execute arbitrary code, so resnext-deploy refuses. Re-save it "
                "where it was trained with `torch.save(model.state_dict(), 'weights.pth')`."
            ) from None
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint ({first_line(exc, 200)})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - garbage input fails in many ways inside torch.load
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint ({first_line(exc, 200)})"
        ) from None

    spec = None
    if isinstance(obj, Mapping):
        spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else None
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} holds no state dict (expected a mapping of tensors)")
    tensors = {_strip(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors")
    return Checkpoint(path, tensors, sha256_of(path), dict(spec) if spec else None)


def load_model(
    path: str | Path, options: LoadOptions = LoadOptions()
) -> tuple[nn.Module, ModelSpec]:
    """Build the canonical model for a checkpoint and load its weights strictly.

    Returns the model in eval mode and the spec that travels with it. Raises
    :class:`CheckpointError` when keys or shapes do not fit, naming what differs and, when another
    registered architecture fits, suggesting it.
    """
    ckpt = read_checkpoint(path)
    saved = _saved_spec(ckpt, options)
    layout = options.layout or saved.get("layout") or detect_layout(ckpt.state_dict)
    state, layout_cfg = convert_layout(ckpt.state_dict, layout)
    arch, cfg = _architecture(ckpt.path, saved, options.arch, layout, layout_cfg)
    if options.input_size:
        cfg = replace(cfg, input_size=options.input_size)

    num_classes = _num_classes(state, options.num_classes, ckpt.path)
    # Shapes first, on the meta device: a config that does not fit is never built for real.
    _check_fit(_build_on_meta(cfg, num_classes), state, arch, ckpt.path)
    model = build_model(cfg, num_classes)
    model.load_state_dict(state, strict=True)
    model.eval()

    class_names = options.class_names or tuple(saved.get("class_names", ()))
    if class_names and len(class_names) != num_classes:
        raise CheckpointError(
            f"{len(class_names)} class names given but the checkpoint has {num_classes} classes"
        )
    input_size = options.input_size or saved.get("input_size") or cfg.input_size
    default_resize = input_size if cfg.stem == "cifar" else round(input_size * 256 / 224)
    spec = ModelSpec(
        arch=arch,
        num_classes=num_classes,
        input_size=input_size,
        resize=options.resize or saved.get("resize") or default_resize,
        mean=options.mean or tuple(saved.get("mean", IMAGENET_MEAN)),
        std=options.std or tuple(saved.get("std", IMAGENET_STD)),
        class_names=tuple(class_names),
        arch_config=cfg.to_dict(),
        layout=layout,
        source_sha256=ckpt.sha256,
    )
    return model, spec


# The saved fields load_model uses (it counts the classes and hashes the file itself).
SAVED_FIELDS = (
    "arch",
    "layout",
    "class_names",
    "input_size",
    "resize",
    "mean",
    "std",
    "arch_config",
)


def _saved_spec(ckpt: Checkpoint, options: LoadOptions) -> dict[str, Any]:
    """The fields of the spec saved in ``ckpt`` (by ``train``, or by hand) that ``options`` do
    not replace, each checked as the spec checks it; raises :class:`CheckpointError` naming the
    file and the field (an option replacing a broken field is the user's way out)."""
    saved = {
        k: v
        for k, v in (ckpt.spec or {}).items()
        if k in SAVED_FIELDS and not getattr(options, k, None)
    }
    try:
        return {name: check_spec_field(name, value) for name, value in saved.items()}
    except ConfigError as exc:
        raise CheckpointError(f"{ckpt.path}: the spec saved in it is invalid: {exc}") from None


def _architecture(
    path: Path,
    saved: dict[str, Any],
    requested: str | None,
    layout: str,
    layout_cfg: ArchConfig | None,
) -> tuple[str, ArchConfig]:
    """The architecture's name and config: the layout's own, a registered one (the user's
    ``--arch`` is always registered, see :class:`LoadOptions`), or the one saved beside a
    name the registry does not know."""
    arch = requested or saved.get("arch")
    if layout_cfg is not None:
        return arch or f"{layout}_resnext50", layout_cfg
    if arch is None:
        raise CheckpointError(
            f"{path} does not say which architecture it is; name it (arch) "
            f"(one of: {', '.join(ARCHS.names())})"
        )
    if arch in ARCHS or not saved.get("arch_config"):
        return arch, ARCHS.get(arch)  # raises with the list of valid names
    return arch, arch_config_from_dict(saved["arch_config"])  # checked in _saved_spec


def _num_classes(state: Mapping[str, torch.Tensor], requested: int | None, path: Path) -> int:
    fc = state.get("fc.weight")
    if fc is None or fc.ndim != 2:
        raise CheckpointError(f"{path} has no classifier weight 'fc.weight'; is it a ResNeXt?")
    found = int(fc.shape[0])
    if requested is not None and requested != found:
        raise CheckpointError(
            f"the number of classes asked for ({requested}) does not match the checkpoint, "
            "whose classifier "
            f"'fc.weight' {tuple(fc.shape)} has {found} classes"
        )
    return found


def _check_fit(model: nn.Module, state: Mapping[str, torch.Tensor], arch: str, path: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    conflicts = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or conflicts):
        return
    if (
        missing
        and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in missing)
        and not unexpected
        and not conflicts
    ):
        raise CheckpointError(
            f"{path} has BatchNorm layers without running statistics; an exported model needs "
            "them (train with track_running_stats=True)"
        )
    parts = [f"{path} does not fit architecture {arch!r}:"]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", conflicts)):
        if items:
            more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
            parts.append(f"{label} keys: {', '.join(items[:MAX_LISTED])}{more}.")
    fits = suggest_archs(state, exclude=arch)
    parts.append(f"It fits: {', '.join(fits)}." if fits else "No registered architecture fits it.")
    raise CheckpointError(" ".join(parts))


def suggest_archs(state: Mapping[str, torch.Tensor], exclude: str | None = None) -> list[str]:
    """Registered architectures whose keys and shapes (classifier aside) match ``state``."""
    fits = []
    shapes = {k: tuple(v.shape) for k, v in state.items() if not k.startswith("fc.")}
    for name, cfg in ARCHS:
        if name == exclude:
            continue
        expected = {
            k: tuple(v.shape)
            for k, v in _build_on_meta(cfg, 1).state_dict().items()
            if not k.startswith("fc.")
        }
        if expected == shapes:
            fits.append(name)
    return fits


# torch.save's legacy (pre-zip) format starts with this number, pickled on its own.
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_PICKLE_OPS = 100_000


def _file_kind(path: Path) -> str:
    """``zip`` or ``legacy`` (torch.save's formats: a zip archive, or the stream that opens with
    :data:`TORCH_LEGACY_MAGIC`), ``pickle`` (a plain pickle), ``empty`` or ``other``. Only parses
    opcodes with :mod:`pickletools`; nothing in the file is run."""
    import pickletools
    import zipfile

    if zipfile.is_zipfile(path):
        return "zip"
    if path.stat().st_size == 0:
        return "empty"
    values = []
    try:
        with path.open("rb") as f:
            for count, (opcode, arg, _pos) in enumerate(pickletools.genops(f)):
                if opcode.name not in ("PROTO", "FRAME", "STOP"):
                    values.append(arg)
                if count > MAX_PICKLE_OPS:
                    return "pickle"
    except Exception:  # noqa: BLE001 - genops raises ValueError and others on non-pickles
        return "other"
    return "legacy" if values == [TORCH_LEGACY_MAGIC] else "pickle"


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key
