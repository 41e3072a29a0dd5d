"""Statistics summed over replicas: each replica counts its own requests
(:class:`~resnext_deploy.serve.stats.ModelStatistics`) and sends its totals to one small
deployment of the same application, :class:`StatisticsStore`, at most every
:data:`PUSH_PERIOD_S` while it has news. A statistics request, answered by one replica, is its
own counts (current) plus every other replica's last totals (at most that period behind).
Counts only grow, so the totals of a replica that died stay in the sum, as in Triton, where the
counts run from the model's load."""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from resnext_deploy.serve.proxy import keep_replica_server_on_node
from resnext_deploy.serve.stats import ModelStatistics, RequestTiming

PUSH_PERIOD_S = 1.0
log = logging.getLogger(__name__)


@serve.deployment(
    num_replicas=1,
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=1000,
    logging_config={"enable_access_log": False},
)
class StatisticsStore:
    """The last totals each replica sent, by replica."""

    def __init__(self) -> None:
        keep_replica_server_on_node()
        self.totals: dict[str, dict[str, Any]] = {}

    def put(self, replica: str, totals: dict[str, Any]) -> None:
        self.totals[replica] = totals

    def others(self, replica: str) -> list[dict[str, Any]]:
        return [t for r, t in self.totals.items() if r != replica]


class ReplicaStatistics:
    """One replica's counts, sent to the store in the background, and the sum on request."""

    def __init__(self, model: str, store: DeploymentHandle | None) -> None:
        self.model = model
        self.counts = ModelStatistics()
        self.store = store
        self.replica = str(serve.get_replica_context().replica_id)
        # The request being answered, in its own task's context (made here: the deployment
        # class travels to the replica pickled, and a ContextVar does not pickle).
        self.current: ContextVar[RequestTiming | None] = ContextVar("timing", default=None)
        self._dirty = False
        self._pusher: asyncio.Task[None] | None = None

    def changed(self) -> None:
        """Call after counting: the store hears of it within the push period."""
        self._dirty = True
        if self._pusher is None and self.store is not None:
            self._pusher = asyncio.get_running_loop().create_task(self._push_forever())

    async def total(self) -> ModelStatistics:
        """This replica's counts plus the others' last totals (this one's alone where the store
        cannot be reached: logged)."""
        mine = self.counts + ModelStatistics()
        if self.store is None:
            return mine
        try:
            others = await self.store.others.remote(self.replica)
        except Exception as exc:  # noqa: BLE001 - statistics must not fail a replica
            log.warning("statistics of the other replicas are unavailable: %s", exc)
            return mine
        for totals in others:
            mine = mine + ModelStatistics.from_dict(totals)
        return mine

    async def _push_forever(self) -> None:
        while True:
            await asyncio.sleep(PUSH_PERIOD_S)
            if not self._dirty or self.store is None:
                continue
            self._dirty = False
            try:
                await self.store.put.remote(self.replica, self.counts.to_dict(self.model))
            except Exception as exc:  # noqa: BLE001 - retried with the next change
                self._dirty = True
                log.warning("could not send statistics to the store: %s", exc)
