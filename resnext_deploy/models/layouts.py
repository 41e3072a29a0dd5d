"""Import checkpoints written by other ResNeXt re-implementations into the canonical layout.

Two layouts from popular tutorials are supported besides torchvision's own:

``modulelist``
    grouped convolution as an ``nn.ModuleList`` of per-group ``Conv2d`` joined with ``torch.cat``
    (keys ``stack{s}.blocks.{i}.grouped_conv.conv_layers.{g}.weight``), BN eps 1.001e-5. The
    per-group kernels are concatenated along the output axis into one grouped kernel: the paper's
    block forms (b) and (c) compute the same function, so this is exact.
``parts``
    ``Conv2d(groups=C)`` with conv biases, stride on the first 1x1 conv, blocks named
    ``part{s}_{b}`` and a ``fn1`` classifier. Each conv bias is folded into the BatchNorm that
    follows (``running_mean -= bias``), which is exact.

Each converter returns the canonical state dict and the :class:`ArchConfig` it implies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from resnext_deploy.errors import CheckpointError
from resnext_deploy.spec import ArchConfig, Layout

LAYOUTS = {
    Layout.TORCHVISION: "torchvision ResNet keys (conv1, layer1.0.conv2, downsample.0, fc)",
    Layout.MODULELIST: "per-group Conv2d ModuleList + torch.cat (stack1.blocks.0.grouped_conv...)",
    Layout.PARTS: "Conv2d(groups=C) with conv biases, stride in 1x1, part1_1... blocks, fn1 head",
}
State = dict[str, torch.Tensor]
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """Name of the layout whose characteristic keys ``state`` has (``torchvision`` otherwise)."""
    if any(".grouped_conv.conv_layers." in k for k in state):
        return "modulelist"
    if "fn1.weight" in state or any(re.match(r"part\d+_\d+\.", k) for k in state):
        return "parts"
    return "torchvision"


def convert_layout(
    state: Mapping[str, torch.Tensor], layout: str
) -> tuple[State, ArchConfig | None]:
    """Canonical state dict and, for a foreign layout, the architecture it implies."""
    converters: dict[str, Callable[[Mapping[str, torch.Tensor]], tuple[State, ArchConfig]]] = {
        "modulelist": _from_modulelist,
        "parts": _from_parts,
    }
    if layout == "torchvision":
        return dict(state), None
    if layout not in converters:
        raise CheckpointError(f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    detected = detect_layout(state)
    if detected != layout:
        raise CheckpointError(
            f"the checkpoint is not in the {layout!r} layout ({LAYOUTS[Layout(layout)]}); its keys "
            f"look like the {detected!r} layout: leave the layout to detection or name {detected!r}"
        )
    return converters[layout](state)


def _copy_bn(out: State, state: Mapping[str, torch.Tensor], src: str, dst: str) -> None:
    for suffix in BN_SUFFIXES:
        key = f"{src}.{suffix}"
        if key in state:
            out[f"{dst}.{suffix}"] = state[key].clone()


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (one group) over the keys."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := rx.match(k))})


def _stage_blocks(
    state: Mapping[str, torch.Tensor], stage: str, block: Callable[[int], str]
) -> tuple[list[int], list[tuple[int, int]]]:
    """The blocks per stage (the architecture's ``layers``) and each ``(stage, block)`` number
    pair, in key order; ``stage`` captures a stage number, ``block(s)`` a block number in ``s``."""
    layers, pairs = [], []
    for s in _count(state, stage):
        blocks = _count(state, block(s))
        layers.append(len(blocks))
        pairs += [(s, b) for b in blocks]
    return layers, pairs


def _from_modulelist(state: Mapping[str, torch.Tensor]) -> tuple[State, ArchConfig]:
    out: State = {}
    try:
        out["conv1.weight"] = state["conv1.weight"].clone()
        _copy_bn(out, state, "bn1", "bn1")
        layers, pairs = _stage_blocks(
            state, r"stack(\d+)\.", lambda s: rf"stack{s}\.blocks\.(\d+)\."
        )
        for s, i in pairs:
            _modulelist_block(out, state, f"stack{s}.blocks.{i}", f"layer{s}.{i}")
        out["fc.weight"], out["fc.bias"] = state["fc.weight"].clone(), state["fc.bias"].clone()
        cardinality = len(_count(state, r"stack1\.blocks\.0\.grouped_conv\.conv_layers\.(\d+)\."))
        width = out["layer1.0.conv2.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"incomplete 'modulelist' checkpoint: key {exc} is missing") from None
    cfg = _config(layers, cardinality, width, stride_in_1x1=False, bn_eps=1.001e-5)
    return out, cfg


def _modulelist_block(out: State, state: Mapping[str, torch.Tensor], src: str, dst: str) -> None:
    groups = _count(state, rf"{re.escape(src)}\.grouped_conv\.conv_layers\.(\d+)\.")
    out[f"{dst}.conv1.weight"] = state[f"{src}.conv1.weight"].clone()
    _copy_bn(out, state, f"{src}.bn1", f"{dst}.bn1")
    # Per-group kernels [w/C, w/C, 3, 3] stacked on the output axis are the grouped
    # kernel [w, w/C, 3, 3]: output channel block g reads only input block g.
    out[f"{dst}.conv2.weight"] = torch.cat(
        [state[f"{src}.grouped_conv.conv_layers.{g}.weight"] for g in groups], dim=0
    )
    _copy_bn(out, state, f"{src}.grouped_conv.bn", f"{dst}.bn2")
    out[f"{dst}.conv3.weight"] = state[f"{src}.conv2.weight"].clone()
    _copy_bn(out, state, f"{src}.bn2", f"{dst}.bn3")
    if f"{src}.shortcut.0.weight" in state:
        out[f"{dst}.downsample.0.weight"] = state[f"{src}.shortcut.0.weight"].clone()
        _copy_bn(out, state, f"{src}.shortcut.1", f"{dst}.downsample.1")


def _from_parts(state: Mapping[str, torch.Tensor]) -> tuple[State, ArchConfig]:
    out: State = {}
    try:
        _conv_bn_folded(out, state, "conv1", "bn1", "conv1", "bn1")
        layers, pairs = _stage_blocks(state, r"part(\d+)_", lambda s: rf"part{s}_(\d+)\.")
        for s, b in pairs:
            _parts_block(out, state, f"part{s}_{b}", f"layer{s}.{b - 1}")
        out["fc.weight"], out["fc.bias"] = state["fn1.weight"].clone(), state["fn1.bias"].clone()
        grouped = state["part1_1.conv2.weight"]
    except KeyError as exc:
        raise CheckpointError(f"incomplete 'parts' checkpoint: key {exc} is missing") from None
    width = grouped.shape[0]
    cardinality = width // grouped.shape[1]
    cfg = _config(layers, cardinality, width, stride_in_1x1=True, bn_eps=1e-5)
    return out, cfg


def _parts_block(out: State, state: Mapping[str, torch.Tensor], src: str, dst: str) -> None:
    for n in (1, 2, 3):
        _conv_bn_folded(
            out, state, f"{src}.conv{n}", f"{src}.bn{n}", f"{dst}.conv{n}", f"{dst}.bn{n}"
        )
    if f"{src}.shortcut.weight" in state:
        _conv_bn_folded(
            out,
            state,
            f"{src}.shortcut",
            f"{src}.shortcut_bn",
            f"{dst}.downsample.0",
            f"{dst}.downsample.1",
        )


def _conv_bn_folded(
    out: State, state: Mapping[str, torch.Tensor], conv: str, bn: str, dst_conv: str, dst_bn: str
) -> None:
    """Copy conv + BN, folding the conv bias into the BN: BN(Wx + b) with mean m equals
    BN(Wx) with mean m - b, exactly."""
    out[f"{dst_conv}.weight"] = state[f"{conv}.weight"].clone()
    _copy_bn(out, state, bn, dst_bn)
    bias = state.get(f"{conv}.bias")
    if bias is not None:
        out[f"{dst_bn}.running_mean"] = state[f"{bn}.running_mean"] - bias


def _config(
    layers: list[int], cardinality: int, width: int, *, stride_in_1x1: bool, bn_eps: float
) -> ArchConfig:
    if cardinality < 1 or width % cardinality:
        raise CheckpointError(
            f"grouped width {width} is not divisible by cardinality {cardinality}"
        )
    # Stage 1 has planes=64, so width = base_width * cardinality.
    return ArchConfig(
        tuple(layers),
        cardinality=cardinality,
        base_width=width // cardinality,
        stem="imagenet",
        stride_in_1x1=stride_in_1x1,
        bn_eps=bn_eps,
        input_size=224,
        description=f"imported ResNeXt-{3 * sum(layers) + 2} {cardinality}x{width // cardinality}d",
    )
