"""Where onnxruntime spends its time: the session profiler, per node and per kind of node.

``SessionOptions.enable_profiling`` writes one JSON event per node run (``<node>_kernel_time``,
with the provider that ran it). The profiler names nodes as they are *after* graph optimization
(fused ``QLinearConv``, NCHWc ``Conv``, ``FusedConv`` ...), so the optimized graph is written by
a second session with the same options (``optimized_model_filepath``) and read back for each
node's ``group`` and kernel. The profiled session does not save its graph itself: onnxruntime
turns weight pre-packing off in a session that serializes its optimized model, which made
resnext50 about 4x slower here.

Convolutions are told apart by ``group`` and kernel (``QLinearConv group=32 3x3``): on CPUs
without VNNI, int8 grouped convolutions are much slower than fp32 ones while dense ones are
faster, and a single ``Conv`` line would hide that.

On the CUDA provider the node events time the host side of each kernel launch, not the GPU work
(onnxruntime records GPU kernel times only when built with CUDA profiling); shares there say
where launches go, not where the GPU is busy.

On TensorRT the model runs as compiled nodes, one per engine, and onnxruntime refuses to save a
graph that holds them ("contains compiled nodes"): no optimized graph is written there, an
engine is one entry of kind ``TensorRT engine``, and every node whose op type, group and kernel
could not be read from a graph is listed in :attr:`OrtProfile.unmapped`.

numpy + onnx + onnxruntime only.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from resnext_deploy.errors import ConfigError
from resnext_deploy.runtime.providers import ORT_NAMES, Provider, SessionConfig, create_session

KERNEL_SUFFIX = "_kernel_time"
TENSORRT_ENGINE = "TensorRT engine"  # the kind of a compiled TensorRT node: its layers are hidden
CONV_OPS = ("Conv", "FusedConv", "QLinearConv", "NhwcFusedConv", "ConvInteger", "NhwcConv")


@dataclass(frozen=True)
class NodeTime:
    """One node of the optimized graph: time per inference call, averaged over the runs."""

    name: str
    op_type: str
    kind: str
    provider: str
    ms: float
    group: int | None = None
    kernel: tuple[int, ...] = ()

    @property
    def conv_class(self) -> str | None:
        """``group=32 3x3`` for any convolution, fp32 or int8 alike; ``None`` for other ops."""
        return conv_class(self.op_type, self.group, self.kernel)


@dataclass(frozen=True)
class KindTime:
    """All nodes of one kind (op type; convolutions also by group and kernel)."""

    kind: str
    nodes: int
    ms: float
    share: float


@dataclass(frozen=True)
class OrtProfile:
    """Per-node and per-kind time of one model at one batch size on one provider."""

    model: str
    provider: str
    batch_size: int
    runs: int
    run_ms: float
    node_ms: float
    kinds: tuple[KindTime, ...]
    nodes: tuple[NodeTime, ...]
    # nodes whose op type, group and kernel no graph told (TensorRT engines, and any node that
    # is missing from the saved optimized graph): kinds from the profiler's op name alone
    unmapped: tuple[str, ...] = ()

    def top(self, n: int = 10) -> tuple[NodeTime, ...]:
        return self.nodes[:n]

    def conv_ms(self) -> dict[str, float]:
        """Milliseconds per convolution class (``group=32 3x3``), whatever kernel ran it."""
        totals: dict[str, float] = defaultdict(float)
        for node in self.nodes:
            if node.conv_class is not None:
                totals[node.conv_class] += node.ms
        return dict(totals)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProfiledSession(SessionConfig):
    """A :class:`SessionConfig` whose sessions also profile (``profile_prefix``) or write the
    optimized graph (``optimized_path``); built with :meth:`of` from a plain one."""

    profile_prefix: str | None = None
    optimized_path: str | None = None

    @classmethod
    def of(
        cls,
        config: SessionConfig,
        profile_prefix: str | None = None,
        optimized_path: str | None = None,
    ) -> ProfiledSession:
        own: dict[str, Any] = {f.name: getattr(config, f.name) for f in fields(SessionConfig)}
        return cls(**own, profile_prefix=profile_prefix, optimized_path=optimized_path)

    def session_options(self) -> Any:
        options = super().session_options()
        if self.profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = self.profile_prefix
        if self.optimized_path:
            options.optimized_model_filepath = self.optimized_path
        return options


def conv_class(op_type: str, group: int | None, kernel: tuple[int, ...]) -> str | None:
    if op_type not in CONV_OPS:
        return None
    size = "x".join(map(str, kernel)) if kernel else "?"
    return f"group={group or 1} {size}"


def node_kind(op_type: str, group: int | None, kernel: tuple[int, ...]) -> str:
    """``QLinearConv group=32 3x3`` for convolutions, the op type for everything else."""
    cls = conv_class(op_type, group, kernel)
    return op_type if cls is None else f"{op_type} {cls}"


def optimized_graph(model: str | Path, config: SessionConfig, directory: Path) -> dict[str, Any]:
    """Node name -> (op type, group, kernel) of the graph onnxruntime really runs.

    Raises :class:`ConfigError` on TensorRT, whose compiled nodes onnxruntime cannot save.
    """
    import onnx

    if config.provider is Provider.TENSORRT:
        raise ConfigError(
            "onnxruntime cannot save the optimized graph of a TensorRT session (it contains "
            "compiled nodes); profile it without one"
        )

    target = directory / "optimized.onnx"
    create_session(model, ProfiledSession.of(config, optimized_path=str(target)))
    graph = onnx.load(str(target), load_external_data=False).graph
    nodes = {}
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        group = attrs.get("group")
        kernel = tuple(int(k) for k in attrs.get("kernel_shape", ()))
        if node.op_type in CONV_OPS and not kernel:
            kernel = _kernel_from_weight(graph, node)
        nodes[node.name] = (node.op_type, int(group) if group is not None else None, kernel)
    return nodes


def _kernel_from_weight(graph: Any, node: Any) -> tuple[int, ...]:
    weights = {i.name: tuple(i.dims) for i in graph.initializer}
    index = 3 if node.op_type == "QLinearConv" else 1
    dims = weights.get(node.input[index]) if len(node.input) > index else None
    return tuple(int(d) for d in dims[2:]) if dims else ()


def profile_model(
    model: str | Path,
    batch: np.ndarray,
    config: SessionConfig | None = None,
    runs: int = 10,
    warmup: int = 3,
) -> OrtProfile:
    """Profile ``runs`` calls on ``batch`` after ``warmup`` calls that are left out.

    Raises :class:`ConfigError` for a non-positive run count, and whatever
    :func:`create_session` raises for a provider that cannot run.
    """
    if runs < 1 or warmup < 0:
        raise ConfigError("profiling needs at least one run and a non-negative warm-up")
    config = config or SessionConfig()
    with tempfile.TemporaryDirectory(prefix="resnext-profile-") as tmp:
        directory = Path(tmp)
        tensorrt = config.provider is Provider.TENSORRT
        graph = {} if tensorrt else optimized_graph(model, config, directory)
        session = create_session(
            model, ProfiledSession.of(config, profile_prefix=str(directory / "ort"))
        )
        feed = {session.get_inputs()[0].name: batch}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    return summarize_events(events, graph, str(model), config, batch.shape[0], runs, warmup)


def summarize_events(
    events: list[dict[str, Any]],
    graph: dict[str, Any],
    model: str,
    config: SessionConfig,
    batch_size: int,
    runs: int,
    warmup: int,
) -> OrtProfile:
    """Per-node and per-kind times from profiler ``events``, leaving out the warm-up runs."""
    model_runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    if len(model_runs) < warmup + runs:
        raise ConfigError(f"the profile holds {len(model_runs)} runs, expected {warmup + runs}")
    nodes, unmapped = _node_times(events, graph, model_runs[warmup]["ts"], runs)
    node_ms = sum(n.ms for n in nodes)
    by_kind: dict[str, list[NodeTime]] = defaultdict(list)
    for n in nodes:
        by_kind[n.kind].append(n)
    kinds = sorted(
        (
            KindTime(kind, len(ns), sum(n.ms for n in ns), sum(n.ms for n in ns) / node_ms)
            for kind, ns in by_kind.items()
        ),
        key=lambda k: -k.ms,
    )
    run_ms = float(np.median([e["dur"] / 1e3 for e in model_runs[warmup:]]))
    return OrtProfile(
        model,
        config.provider.value,
        batch_size,
        runs,
        run_ms,
        node_ms,
        tuple(kinds),
        tuple(nodes),
        unmapped,
    )


def _node_times(
    events: list[dict[str, Any]], graph: dict[str, Any], start: float, runs: int
) -> tuple[list[NodeTime], tuple[str, ...]]:
    """Each node's time per run from ``start`` on, slowest first, and the nodes ``graph`` does
    not hold (labelled from the event: a TensorRT engine, or its op name)."""
    totals: dict[str, float] = defaultdict(float)
    args: dict[str, dict[str, Any]] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith(KERNEL_SUFFIX) or event["ts"] < start:
            continue
        node = name[: -len(KERNEL_SUFFIX)]
        totals[node] += event["dur"] / 1e3
        args[node] = event.get("args", {})
    nodes = []
    for node, total in totals.items():
        provider = args[node].get("provider", "")
        if node in graph:
            op, group, kernel = graph[node]
            kind = node_kind(op, group, kernel)
        else:
            op, group, kernel = args[node].get("op_name", "?"), None, ()
            tensorrt = provider == ORT_NAMES[Provider.TENSORRT]
            kind = TENSORRT_ENGINE if tensorrt else f"{op} (not mapped)"
        nodes.append(NodeTime(node, op, kind, provider, total / runs, group, kernel))
    nodes.sort(key=lambda n: -n.ms)
    return nodes, tuple(sorted(node for node in totals if node not in graph))
