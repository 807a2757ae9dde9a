"""The fleet inventory: every live worker, from the watch on their Leases.

One owner (this class) holds the state; the scheduler reads a `snapshot()`: immutable
views of the workers, each rebuilt only when its worker changes, so a snapshot costs a
list copy however often the dispatch loop takes one. A dispatch is *assumed* at once
(the worker counts as busier) and forgotten when the job ends, so capacity is right
between a dispatch and the worker's next Lease renewal. Likewise each worker's hot set is
*predicted* (`WorkerView.hot_order`): the models it reports hot, and the models of the
jobs it was given (their checkpoints are hot or loading there), evicting as the worker
would by the dispatch's keep_hot, so the placement planner sees a load before the Lease
does. Everything runs on the operator's one event loop: a method that does not await is
atomic, so no lock is needed.
"""

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property

from diffleet_core.fleet import WorkerInventory
from diffleet_operator.moving_average import smoothed


@dataclass(frozen=True)
class WorkerView:
    """A worker as placement sees it, frozen at one moment."""

    worker_id: str
    pool: str
    # The GPU type it announced; one that announced none has its pool's name.
    gpu_type: str
    node: str
    vram_gib: float
    concurrency: int
    draining: bool
    hot_models: frozenset[str]
    warm_models: frozenset[str]
    # Jobs its Lease lists, and jobs dispatched to it since (assumed).
    in_flight: frozenset[str]
    assumed: frozenset[str] = frozenset()
    # The predicted hot set, least recently used first, and the hot tier's size (None:
    # unbounded or not announced).
    hot_order: tuple[str, ...] = ()
    hot_slots: int | None = None
    # Its jobs whose model this operator knows: (uid, model digest, since when it has
    # the job: time.monotonic() at dispatch, or when first seen).
    running: tuple[tuple[str, str, float], ...] = ()

    @classmethod
    def of(
        cls,
        inventory: WorkerInventory,
        assumed: frozenset[str] = frozenset(),
        *,
        cordoned: bool = False,
        hot_order: tuple[str, ...] = (),
        running: tuple[tuple[str, str, float], ...] = (),
    ) -> "WorkerView":
        return cls(
            worker_id=inventory.worker_id,
            pool=inventory.pool,
            gpu_type=inventory.gpu_type or inventory.pool,
            node=inventory.node,
            vram_gib=inventory.vram_gib,
            concurrency=inventory.concurrency,
            draining=inventory.draining or cordoned,
            hot_models=frozenset(inventory.hot_models),
            warm_models=frozenset(inventory.warm_models),
            in_flight=frozenset(inventory.jobs_in_flight),
            assumed=assumed,
            hot_order=hot_order or tuple(inventory.hot_models),
            hot_slots=inventory.hot_slots,
            running=running,
        )

    @cached_property
    def jobs(self) -> frozenset[str]:
        return self.in_flight | self.assumed

    @property
    def load(self) -> int:
        return len(self.jobs)

    @property
    def free_slots(self) -> int:
        return max(self.concurrency - self.load, 0)


@dataclass
class _Worker:
    inventory: WorkerInventory
    # The Lease's renewTime as last seen, and when (time.monotonic()) it last changed.
    renewal: str
    observed_at: float
    duration: float
    assumed: set[str] = field(default_factory=set)
    cordoned: bool = False
    # uid -> the jobs it was given: model digest, time.monotonic() when dispatched, and
    # whether the model was (predicted) hot there then.
    given: dict[str, tuple[str, float, bool]] = field(default_factory=dict)
    # The keep_hot of its last dispatch.
    keep_hot: tuple[str, ...] = ()
    view: WorkerView = field(init=False)

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        jobs = self.assumed | set(self.inventory.jobs_in_flight)
        self.given = {uid: given for uid, given in self.given.items() if uid in jobs}
        running = sorted(
            ((uid, digest, since) for uid, (digest, since, _) in self.given.items()),
            key=lambda job: job[2],
        )
        hot_order = predicted_hot(
            self.inventory.hot_models,
            [digest for _, digest, _ in running],
            self.keep_hot,
            self.inventory.hot_slots,
        )
        self.view = WorkerView.of(
            self.inventory,
            frozenset(self.assumed),
            cordoned=self.cordoned,
            hot_order=hot_order,
            running=tuple(running),
        )


def predicted_hot(
    reported: Collection[str], in_use: list[str], keep_hot: Collection[str], slots: int | None
) -> tuple[str, ...]:
    """A worker's hot set as it will be: what it reported (least recently used first),
    then the models its jobs use (oldest job first), evicting beyond `slots` as the worker
    does: idle models not in keep_hot first, then idle ones, least recently used first."""
    order = [model for model in reported if model not in in_use] + list(dict.fromkeys(in_use))
    while slots is not None and len(order) > slots:
        idle = [model for model in order if model not in in_use]
        if not idle:
            break
        spare = [model for model in idle if model not in keep_hot]
        order.remove((spare or idle)[0])
    return tuple(order)


class FleetInventory:
    """Liveness is judged like client-go's leader election: by when this process saw a
    worker's Lease last change (its own monotonic clock), never by the renewTime a
    worker's clock wrote, so clock skew between nodes cannot lose or keep a worker. After
    the watch (re)lists the Leases, each worker has at least one lease duration of grace
    from then: renewals missed while the watch was down do not count against it."""

    def __init__(self, now: float | None = None) -> None:
        self._workers: dict[str, _Worker] = {}
        # Workers the pool controller is removing: placed on as draining, Lease or not.
        self._cordoned: set[str] = set()
        self.changed = asyncio.Event()
        self._listed_at = time.monotonic() if now is None else now
        self._occupancy: dict[str, float] = {}

    def upsert(
        self, inventory: WorkerInventory, *, renewal: str, duration: float, now: float
    ) -> None:
        """The worker's Lease as the watch shows it: `renewal` is its renewTime, which
        the worker changes on each renewal; `now` is time.monotonic()."""
        worker = self._workers.get(inventory.worker_id)
        if worker is None:
            cordoned = inventory.worker_id in self._cordoned
            self._workers[inventory.worker_id] = _Worker(
                inventory, renewal, now, duration, cordoned=cordoned
            )
        else:
            if renewal != worker.renewal:
                worker.renewal, worker.observed_at = renewal, now
            worker.inventory = inventory
            worker.duration = duration
            worker.assumed -= set(inventory.jobs_in_flight)
            worker.refresh()
        self.changed.set()

    def relisted(self, now: float) -> None:
        """The watch listed the Leases again (start or reconnect): grace from `now`."""
        self._listed_at = now

    def remove(self, worker_id: str) -> WorkerView | None:
        worker = self._workers.pop(worker_id, None)
        self.changed.set()
        return None if worker is None else worker.view

    def cordon(self, worker_id: str) -> None:
        """The pool controller removes the worker: nothing more is placed on it (it reads
        as draining), from now on, even if its Lease appears only later."""
        self._cordoned.add(worker_id)
        if worker := self._workers.get(worker_id):
            worker.cordoned = True
            worker.refresh()

    def uncordon(self, worker_id: str) -> None:
        """The worker's pod is gone, or was not removed after all."""
        self._cordoned.discard(worker_id)
        if worker := self._workers.get(worker_id):
            worker.cordoned = False
            worker.refresh()
            self.changed.set()

    def assume(
        self,
        worker_id: str,
        uid: str,
        model: str | None = None,
        keep_hot: Collection[str] = (),
    ) -> None:
        """The job was just given to the worker; with its model's digest (and the
        dispatch's keep_hot) the worker's hot set is predicted with it."""
        if worker := self._workers.get(worker_id):
            worker.assumed.add(uid)
            if model is not None:
                hot = model in worker.view.hot_order
                worker.given[uid] = (model, time.monotonic(), hot)
                worker.keep_hot = tuple(keep_hot)
            worker.refresh()

    def holder(self, uid: str) -> str | None:
        """The worker that runs the job or was just given it, if any."""
        for worker in self._workers.values():
            if uid in worker.assumed or uid in worker.inventory.jobs_in_flight:
                return worker.inventory.worker_id
        return None

    def forget(self, uid: str) -> None:
        """The job ended or was requeued: it no longer takes a slot anywhere."""
        for worker in self._workers.values():
            if given := worker.given.get(uid):
                self._occupied(given)
            if uid in worker.assumed or uid in worker.inventory.jobs_in_flight:
                worker.assumed.discard(uid)
                jobs = [job for job in worker.inventory.jobs_in_flight if job != uid]
                worker.inventory = worker.inventory.model_copy(update={"jobs_in_flight": jobs})
                worker.refresh()
        self.changed.set()

    def occupancy(self) -> dict[str, float]:
        """Per model, how long a job of it holds a slot of a worker that has it hot, from
        dispatch to its end as this operator learns of it (a moving average): its run
        time plus the protocol's overhead, which decides how fast a holder drains a
        queue."""
        return dict(self._occupancy)

    def _occupied(self, given: tuple[str, float, bool]) -> None:
        digest, since, hot = given
        if hot:
            sample = time.monotonic() - since
            self._occupancy[digest] = smoothed(self._occupancy.get(digest), sample)

    def expired(self, now: float) -> list[WorkerView]:
        """Removes and returns the workers whose Lease ran out (`now`: time.monotonic())."""
        lost = [
            w
            for w in self._workers.values()
            if max(w.observed_at, self._listed_at) + w.duration < now
        ]
        for worker in lost:
            del self._workers[worker.inventory.worker_id]
        if lost:
            self.changed.set()
        return [worker.view for worker in lost]

    def snapshot(self) -> list[WorkerView]:
        return [worker.view for worker in self._workers.values()]
