"""Where parity breaks: intermediate tensors of a reference against an ONNX file, layer by layer.

The reference is the eager PyTorch model (forward hooks) or another ONNX file (the fp32 export,
when ranking int8 layers). The candidate is run by onnxruntime with the matching values added as
graph outputs. Values are matched to modules through the metadata the torch.export-based exporter
writes on every node (``pkg.torch.onnx.name_scopes``), never by position.

What is compared (the boundaries that survive export):

* every ``Conv`` node. BatchNorm is folded into the convolution, so the node carries the
  BatchNorm's scope: its output is compared with the BatchNorm's hook output, and the row is named
  after the convolution (from the folded weight's initializer name, ``layer2.0.conv2.weight``).
  When the convolution's only consumer is a ReLU, the ReLU's output is compared instead (and
  ReLU is applied to the hook output): int8 graphs drop such ReLUs into their QuantizeLinear;
* ``Gemm``/``MatMul`` and pooling nodes, against their module's hook;
* every container module (a bottleneck block, a stage) at the value its last node produces,
  unless that value is already compared under a leaf's name.

In an int8 (QDQ) graph a value that is quantized is read after its QuantizeLinear ->
DequantizeLinear pair, as its consumers see it (onnxruntime's ``qdq_loss_debug`` compares the same
tensors). Adding graph outputs keeps onnxruntime from fusing the nodes that produce them into
QLinear kernels: the error measured is that of the quantized weights and activations, computed
in fp32 (within rounding of what the fused kernels compute).

Per layer: max |diff|, max |diff| / max |reference|, the smallest per-image cosine, the relative
L2 error ``|diff| / |reference|`` and how much of it the layer adds over the layers feeding it
(``added``, which ranks int8 layers by their own quantization error).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from resnext_deploy.artifact import Artifact, Tolerance, Variant
from resnext_deploy.errors import ArtifactError, ConfigError
from resnext_deploy.parity import ParityReport
from resnext_deploy.runtime.providers import Provider, SessionConfig

if TYPE_CHECKING:
    from resnext_deploy.verify import VerifyConfig

SCOPES_KEY = "pkg.torch.onnx.name_scopes"
LEAF_OPS = ("Conv", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean")
FP16_MAX = 65504.0


@dataclass(frozen=True)
class Boundary:
    """A tensor both sides produce. ``name``: the module reported (``layer2.0.conv2``);
    ``hook``: the module whose forward output is the reference (``layer2.0.bn2`` for a folded
    pair); ``value``/``node``: the ONNX value and its producer in the fp32 export; ``relu``: the
    value is after a ReLU outside ``hook``; ``upstream``: the boundaries feeding this one."""

    name: str
    hook: str
    value: str
    node: str
    op: str
    relu: bool = False
    upstream: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerError:
    name: str
    op: str
    value: str
    max_abs: float
    max_rel: float
    cosine: float
    rel_l2: float
    added: float
    ref_max: float
    nonfinite: bool
    exceeds: bool

    @property
    def overflows_fp16(self) -> bool:
        return self.nonfinite or self.ref_max > FP16_MAX


@dataclass(frozen=True)
class Localization:
    """One candidate (a backend or variant) against the reference, boundary by boundary in
    execution order. ``missing``: boundaries that could not be compared, with the reason."""

    backend: str
    reference: str
    tolerance: Tolerance
    layers: tuple[LayerError, ...]
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def first_exceeding(self) -> LayerError | None:
        return next((layer for layer in self.layers if layer.exceeds), None)

    @property
    def first_nonfinite(self) -> LayerError | None:
        return next((layer for layer in self.layers if layer.nonfinite), None)

    @property
    def first_overflow(self) -> LayerError | None:
        """First layer whose values leave fp16's range (reference beyond 65504, or Inf/NaN)."""
        return next((layer for layer in self.layers if layer.overflows_fp16), None)

    def worst(self, n: int = 5) -> tuple[LayerError, ...]:
        """The ``n`` layers that add the most relative error of their own."""
        return tuple(sorted(self.layers, key=lambda layer: -layer.added)[:n])

    def to_dict(self) -> dict[str, Any]:
        first = self.first_exceeding
        return {
            "backend": self.backend,
            "reference": self.reference,
            "tolerance": asdict(self.tolerance),
            "first_exceeding": first.name if first else None,
            "first_nonfinite": self.first_nonfinite.name if self.first_nonfinite else None,
            "first_fp16_overflow": self.first_overflow.name if self.first_overflow else None,
            "layers": [
                asdict(layer) | {"overflows_fp16": layer.overflows_fp16} for layer in self.layers
            ],
            "missing": self.missing,
        }


@dataclass(frozen=True)
class LocalizationReport:
    inputs: str
    results: tuple[Localization, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "results": [r.to_dict() for r in self.results]}


@dataclass(frozen=True, kw_only=True)
class LocalizeConfig:
    """Which ONNX variants to localize, on which provider, and on which inputs (the user's images
    when given, else ``batch_size`` seeded standard-normal images)."""

    variants: tuple[Variant, ...] = (Variant.FP32, Variant.FP16, Variant.INT8)
    provider: Provider = Provider.CPU
    batch_size: int = 4
    seed: int = 0
    images: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("localization needs a batch of at least one image")
        if Variant.PREPROCESS in self.variants:
            raise ConfigError("the preprocessing graph takes uint8 images; localize fp32 instead")


# --- the fp32 export's boundaries ---------------------------------------------------------------


def _scopes(node: Any) -> list[str] | None:
    props = {p.key: p.value for p in node.metadata_props}
    if SCOPES_KEY not in props:
        return None
    try:
        scopes = ast.literal_eval(props[SCOPES_KEY])
    except (ValueError, SyntaxError):
        return None
    return [str(s) for s in scopes] if isinstance(scopes, list) else None


def find_boundaries(model: Any) -> list[Boundary]:
    """The comparable values of an fp32 export (an ``onnx.ModelProto``), in graph order.

    Raises :class:`ArtifactError` when the nodes carry no module metadata (an ONNX file not
    written by the torch.export-based exporter).
    """
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    found: dict[str, tuple[int, Boundary]] = {}  # value -> (node index, boundary)
    chains = [(index, node, _scopes(node)) for index, node in enumerate(graph.node)]
    annotated = [(i, n, [s for s in sc[1:-1] if s]) for i, n, sc in chains if sc is not None]
    # A container is a module with modules inside it (a block, a stage); its output is the value
    # its last node produces.
    parents = {path for _, _, chain in annotated for path in chain[:-1]}
    containers: dict[str, int] = {}
    for index, node, chain in annotated:
        for path in chain:
            if path in parents:
                containers[path] = index
        if node.op_type not in LEAF_OPS or not chain:
            continue
        hook = chain[-1]
        weight = node.input[1] if len(node.input) > 1 else ""
        is_weight = weight in initializers and weight.endswith(".weight")
        name = weight[: -len(".weight")] if is_weight else hook
        op = f"{node.op_type}+BN" if name != hook and node.op_type == "Conv" else node.op_type
        value, relu = node.output[0], False
        users = consumers.get(value, [])
        if node.op_type == "Conv" and len(users) == 1 and users[0].op_type == "Relu":
            value, relu = users[0].output[0], True
            op += "+ReLU"
        found.setdefault(value, (index, Boundary(name, hook, value, node.name, op, relu)))
    if not annotated:
        raise ArtifactError(
            "the ONNX graph carries no module names in its node metadata "
            f"({SCOPES_KEY}); re-export it with this tool (torch.onnx dynamo exporter)"
        )
    # Deeper containers first, so that a stage whose output is its last block's output is
    # reported under the block's name.
    for path, index in sorted(containers.items(), key=lambda kv: -kv[0].count(".")):
        node = graph.node[index]
        value = node.output[0]
        found.setdefault(value, (index, Boundary(path, path, value, node.name, "block")))
    ordered = [b for _, b in sorted(found.values(), key=lambda item: item[0])]
    return _with_upstream(graph, ordered)


def _with_upstream(graph: Any, boundaries: list[Boundary]) -> list[Boundary]:
    producer = {out: node for node in graph.node for out in node.output}
    by_value = {b.value: b.name for b in boundaries}
    done = []
    for b in boundaries:
        feeding: set[str] = set()
        stack, seen = [producer[b.value]], set()
        while stack:
            node = stack.pop()
            if node.name in seen:
                continue
            seen.add(node.name)
            for value in node.input:
                if value in by_value and value != b.value:
                    feeding.add(by_value[value])
                elif value in producer:
                    stack.append(producer[value])
        done.append(Boundary(b.name, b.hook, b.value, b.node, b.op, b.relu, tuple(sorted(feeding))))
    return done


# --- activations --------------------------------------------------------------------------------


def torch_activations(
    model: Any, boundaries: list[Boundary], batch: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Reference values from forward hooks: (boundary name -> array, boundary name -> why it is
    missing). A module that runs more than once per forward pass is ambiguous and left out."""
    import torch

    wanted = {b.hook for b in boundaries}
    outputs: dict[str, list[np.ndarray]] = defaultdict(list)
    handles = []
    for name, module in model.named_modules():
        if name in wanted:

            def hook(_m: Any, _i: Any, out: Any, name: str = name) -> None:
                # Cloned: the next in-place ReLU would otherwise change what was recorded.
                outputs[name].append(out.detach().float().clone().numpy())

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model.eval()(torch.from_numpy(batch))
    finally:
        for handle in handles:
            handle.remove()
    values, missing = {}, {}
    for b in boundaries:
        calls = outputs.get(b.hook, [])
        if len(calls) != 1:
            missing[b.name] = f"module {b.hook!r} ran {len(calls)} times in one forward pass"
            continue
        values[b.name] = np.maximum(calls[0], 0) if b.relu else calls[0]
    return values, missing


def onnx_activations(
    model: str | Path | Any,
    boundaries: list[Boundary],
    batch: np.ndarray,
    config: SessionConfig | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The boundaries' values in an ONNX file (fp32 export or a variant of it), read through
    onnxruntime with those values added as graph outputs."""
    import onnx

    from resnext_deploy.runtime.providers import create_session

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    resolved, missing = resolve_values(proto, boundaries)
    present = {o.name for o in proto.graph.output}
    for value in dict.fromkeys(resolved.values()):
        if value not in present:
            proto.graph.output.append(onnx.ValueInfoProto(name=value))
    session = create_session(proto.SerializeToString(), config or SessionConfig())
    names = list(dict.fromkeys(resolved.values()))
    arrays = session.run(names, {session.get_inputs()[0].name: batch})
    by_value = dict(zip(names, arrays, strict=True))
    return {b: np.asarray(by_value[v], dtype=np.float32) for b, v in resolved.items()}, missing


def resolve_values(proto: Any, boundaries: list[Boundary]) -> tuple[dict[str, str], dict[str, str]]:
    """Boundary name -> the value to read in ``proto``: the same value name, else the output of
    the node with the same name; after a QuantizeLinear -> DequantizeLinear pair when there is
    one."""
    graph = proto.graph
    produced = {out for node in graph.node for out in node.output}
    by_node = {node.name: node for node in graph.node}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    resolved, missing = {}, {}
    for b in boundaries:
        value = b.value if b.value in produced else None
        if value is None and b.node in by_node:
            value = by_node[b.node].output[0]
        if value is None:
            missing[b.name] = f"neither value {b.value!r} nor node {b.node!r} is in this graph"
            continue
        for q in consumers.get(value, []):
            if q.op_type == "QuantizeLinear":
                dq = next(
                    (d for d in consumers.get(q.output[0], []) if d.op_type == "DequantizeLinear"),
                    None,
                )
                if dq is not None:
                    value = dq.output[0]
                    break
        resolved[b.name] = value
    return resolved, missing


# --- comparison ---------------------------------------------------------------------------------


def compare_activations(
    backend: str,
    reference_name: str,
    boundaries: list[Boundary],
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    tolerance: Tolerance,
    missing: dict[str, str] | None = None,
) -> Localization:
    """Per-boundary errors of ``candidate`` against ``reference`` (both name -> array)."""
    missing = dict(missing or {})
    rel_l2: dict[str, float] = {}
    layers = []
    for b in boundaries:
        if b.name not in reference or b.name not in candidate:
            missing.setdefault(b.name, "not produced by both sides")
            continue
        ref = reference[b.name].astype(np.float64)
        out = candidate[b.name].astype(np.float64)
        if ref.shape != out.shape:
            missing[b.name] = f"shape {out.shape} != reference {ref.shape}"
            continue
        layers.append(_layer_error(b, ref, out, tolerance, rel_l2))
    return Localization(backend, reference_name, tolerance, tuple(layers), missing)


def _layer_error(
    b: Boundary, ref: np.ndarray, out: np.ndarray, tol: Tolerance, rel_l2: dict[str, float]
) -> LayerError:
    ref_max = float(np.abs(ref).max()) if ref.size else 0.0
    nonfinite = not np.isfinite(out).all()
    if nonfinite:
        rel_l2[b.name] = float("inf")
        return LayerError(
            b.name,
            b.op,
            b.value,
            float("inf"),
            float("inf"),
            0.0,
            float("inf"),
            float("inf"),
            ref_max,
            True,
            True,
        )
    diff = np.abs(out - ref)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = max_abs / max(ref_max, 1e-12)
    rows_ref, rows_out = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    norms = np.linalg.norm(rows_ref, axis=1) * np.linalg.norm(rows_out, axis=1)
    cos = (rows_ref * rows_out).sum(1) / np.maximum(norms, 1e-30)
    cosine = float(np.where(norms > 0, cos, 1.0).min())
    err = float(np.linalg.norm(out - ref)) / max(float(np.linalg.norm(ref)), 1e-30)
    rel_l2[b.name] = err
    feeding = [rel_l2[u] for u in b.upstream if u in rel_l2]
    added = err - max(feeding, default=0.0)
    exceeds = (tol.checks_error and max_rel > tol.max_rel) or cosine < tol.min_cosine
    return LayerError(
        b.name, b.op, b.value, max_abs, max_rel, cosine, err, added, ref_max, False, exceeds
    )


# --- entry points -------------------------------------------------------------------------------


def localize_model(
    model: Any,
    directory: Path,
    batch: np.ndarray,
    variants: tuple[tuple[Variant, Provider], ...],
    inputs: str = "",
) -> LocalizationReport:
    """Eager ``model`` (hooks) against each (variant, provider) ONNX file in ``directory``."""
    import onnx

    boundaries = find_boundaries(onnx.load(str(directory / Variant.FP32.file)))
    reference, ref_missing = torch_activations(model, boundaries, batch)
    results = []
    for variant, provider in variants:
        backend = f"onnxruntime-{provider.value}{variant.suffix}"
        values, missing = onnx_activations(
            directory / variant.file, boundaries, batch, SessionConfig(provider=provider)
        )
        results.append(
            compare_activations(
                backend,
                "eager",
                boundaries,
                reference,
                values,
                variant.tolerance,
                ref_missing | missing,
            )
        )
    return LocalizationReport(inputs or f"{len(batch)} images", tuple(results))


def localization_targets(
    report: ParityReport | None, artifact: Artifact, config: LocalizeConfig, everything: bool
) -> tuple[tuple[Variant, Provider], ...]:
    """What to localize: with ``everything``, each requested variant the export holds; else
    only the onnxruntime backends that failed parity in ``report``."""
    held = [v for v in config.variants if artifact.has(v)]
    if everything:
        return tuple((v, config.provider) for v in held)
    backends = report.backends if report is not None else []  # a failed report is falsy
    failed = {b.backend for b in backends if not b.passed}
    targets = []
    for provider in Provider:
        for v in held:
            if f"onnxruntime-{provider.value}{v.suffix}" in failed:
                targets.append((v, provider))
    return tuple(targets)


def localize_artifact(
    artifact: Artifact,
    config: LocalizeConfig,
    targets: tuple[tuple[Variant, Provider], ...] | None = None,
) -> LocalizationReport:
    """Rebuild the eager model from the export's weights and localize ``targets`` (default: every
    variant in ``config`` the export holds, on ``config.provider``)."""
    from resnext_deploy.artifact import WEIGHTS_FILE
    from resnext_deploy.models.checkpoint import read_checkpoint
    from resnext_deploy.models.registry import build_model

    spec = artifact.spec
    model = build_model(spec.architecture(), spec.num_classes)
    model.load_state_dict(read_checkpoint(artifact.file(WEIGHTS_FILE)).state_dict, strict=True)
    if targets is None:
        targets = localization_targets(None, artifact, config, everything=True)
    batch, label = localization_batch(spec, config)
    return localize_model(model, artifact.path, batch, targets, label)


def localization_batch(spec: Any, config: LocalizeConfig) -> tuple[np.ndarray, str]:
    """The user's images through the real preprocessing, else seeded standard-normal images."""
    if config.images:
        from resnext_deploy.errors import DataError
        from resnext_deploy.preprocess import list_images, load_image, preprocess

        files = list_images(list(config.images))
        if not files:
            raise DataError(f"no images found in {', '.join(map(str, config.images))}")
        return preprocess([load_image(f) for f in files], spec), f"{len(files)} user images"
    rng = np.random.default_rng(config.seed)
    size = spec.input_size
    batch = rng.standard_normal((config.batch_size, 3, size, size), dtype=np.float32)
    return batch, f"random batch={config.batch_size} (seed {config.seed})"


@dataclass(frozen=True)
class CheckedArtifact:
    """``verify``'s outcome: the parity report, and where parity broke when it was localized."""

    parity: ParityReport
    localization: LocalizationReport | None = None

    @property
    def passed(self) -> bool:
        return self.parity.passed

    def failed_backends(self) -> list[str]:
        return [b.backend for b in self.parity.backends if not b.passed]

    def to_dict(self) -> dict[str, Any]:
        extra = {"localization": self.localization.to_dict()} if self.localization else {}
        return self.parity.to_dict() | extra


def check_artifact(
    artifact: Artifact,
    config: VerifyConfig,
    localize_all: bool = False,
    progress: Callable[[str], None] | None = None,
) -> CheckedArtifact:
    """Parity of every backend (``config``: a :class:`~resnext_deploy.verify.VerifyConfig`),
    then, layer by layer on the same images and seed, every onnxruntime backend that failed
    (with ``localize_all``: every ONNX variant), so that a failure names the first module beyond
    tolerance without a second command."""
    from resnext_deploy.verify import verify_artifact

    if progress:
        progress("comparing backends")
    report = verify_artifact(artifact, config)
    where = LocalizeConfig(images=config.images, seed=config.seed)
    targets = localization_targets(report, artifact, where, everything=localize_all)
    if not targets:
        return CheckedArtifact(report)
    if progress:
        progress("comparing layer by layer")
    return CheckedArtifact(report, localize_artifact(artifact, where, targets))
