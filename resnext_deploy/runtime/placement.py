"""Where onnxruntime placed each node of a session, and the check that the convolutions run on
the provider that was asked for.

``session.get_providers()[0]`` only says which provider was *registered* first: TensorRT is listed
first even when it took no node (e.g. an int8 model whose uint8 activations TensorRT cannot
import), and CUDA is listed while small shape nodes run on the CPU. onnxruntime records the real
assignment when the session option ``session.record_ep_graph_assignment_info`` is ``"1"``
(:data:`RECORD_ASSIGNMENT`, set by every :class:`~resnext_deploy.runtime.providers.SessionConfig`);
``session.get_provider_graph_assignment_info()`` then lists subgraphs per provider with their
nodes. This works on the CPU provider too, so it is tested without a GPU.

numpy/onnxruntime only (no torch).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from resnext_deploy.errors import ProviderUnavailableError

RECORD_ASSIGNMENT = "session.record_ep_graph_assignment_info"


def is_conv(op_type: str) -> bool:
    """Conv and the fused or quantized forms onnxruntime turns it into (FusedConv, NhwcConv,
    QLinearConv, ConvInteger); a ConvTranspose is not a convolution of this model family."""
    return "Conv" in op_type and "Transpose" not in op_type


@dataclass(frozen=True, kw_only=True)
class Placement:
    """How many nodes each provider got, and which op types ran away from ``requested``.

    ``nodes``: provider -> node count. ``elsewhere``: provider other than ``requested`` -> op
    type -> count. ``convs`` / ``convs_on_requested``: convolution nodes in all / on ``requested``.
    """

    requested: str
    nodes: dict[str, int] = field(default_factory=dict)
    elsewhere: dict[str, dict[str, int]] = field(default_factory=dict)
    convs: int = 0
    convs_on_requested: int = 0

    @property
    def total(self) -> int:
        return sum(self.nodes.values())

    @property
    def on_requested(self) -> int:
        return self.nodes.get(self.requested, 0)

    @property
    def ok(self) -> bool:
        """Every convolution on the requested provider (a graph without convolutions: at least
        one node there)."""
        if self.convs:
            return self.convs_on_requested == self.convs
        return self.on_requested > 0

    def problem(self) -> str | None:
        """Why :attr:`ok` is false, in words; ``None`` when it is true."""
        if self.ok:
            return None
        if self.convs:
            head = f"{self.convs_on_requested} of {self.convs} Conv nodes run on {self.requested}"
        else:
            head = f"no node runs on {self.requested}"
        return f"{head}; {self.describe_elsewhere()}"

    def describe_elsewhere(self) -> str:
        """``CPUExecutionProvider: Conv x53, Relu x49`` for each other provider, or a note that
        there is none."""
        if not self.elsewhere:
            return f"all {self.total} nodes run on {self.requested}"
        parts = []
        for provider, ops in self.elsewhere.items():
            listed = ", ".join(f"{op} x{n}" for op, n in ops.items())
            parts.append(f"{provider}: {listed}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "nodes": dict(self.nodes),
            "elsewhere": {p: dict(ops) for p, ops in self.elsewhere.items()},
            "convs": self.convs,
            "convs_on_requested": self.convs_on_requested,
            "ok": self.ok,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Placement:
        return cls(
            requested=str(data["requested"]),
            nodes={str(k): int(v) for k, v in data.get("nodes", {}).items()},
            elsewhere={
                str(p): {str(op): int(n) for op, n in ops.items()}
                for p, ops in data.get("elsewhere", {}).items()
            },
            convs=int(data.get("convs", 0)),
            convs_on_requested=int(data.get("convs_on_requested", 0)),
        )


def read_placement(session: Any, requested: str) -> Placement:
    """The placement of ``session``'s nodes (``requested`` is an onnxruntime provider name).

    Raises :class:`ProviderUnavailableError` when the session was built without
    :data:`RECORD_ASSIGNMENT` (onnxruntime keeps no record then).
    """
    try:
        subgraphs = session.get_provider_graph_assignment_info()
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail type
        raise ProviderUnavailableError(
            f"onnxruntime recorded no node placement for this session ({exc}); build it with "
            f"the session option {RECORD_ASSIGNMENT}=1"
        ) from None
    per_provider: Counter[str] = Counter()
    ops: dict[str, Counter[str]] = {}
    convs = convs_on = 0
    for subgraph in subgraphs:
        provider = str(subgraph.ep_name)
        for node in subgraph.get_nodes():
            op = str(node.op_type)
            per_provider[provider] += 1
            ops.setdefault(provider, Counter())[op] += 1
            if is_conv(op):
                convs += 1
                convs_on += provider == requested
    elsewhere = {
        p: dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        for p, counts in sorted(ops.items())
        if p != requested
    }
    return Placement(
        requested=requested,
        nodes=dict(sorted(per_provider.items())),
        elsewhere=elsewhere,
        convs=convs,
        convs_on_requested=convs_on,
    )


def check_placement(placement: Placement) -> None:
    """Raise :class:`ProviderUnavailableError` unless every convolution runs on the requested
    provider (the rest is reported, not refused: onnxruntime keeps small shape nodes on the
    CPU on purpose)."""
    problem = placement.problem()
    if problem is not None:
        raise ProviderUnavailableError(
            f"{placement.requested} was requested but onnxruntime placed the model elsewhere: "
            f"{problem}. resnext-deploy never falls back silently: use the provider that "
            "runs this model (e.g. cpu), or a model variant that provider can take."
        )
