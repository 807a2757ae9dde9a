"""Batch placement: which waiting jobs go to which workers now, planned over a lookahead
window of the queue so that checkpoint loads stay few. Pure: the dispatch loop
(scheduler.dispatcher) and the offline simulation (bench/bound.py) call the same `plan`.

A round, over the jobs in fair order (the order they should be considered in), one rank
(tier) at a time, each on the workers the ranks before it left free:
1. a job that has waited `patience` load times, or is `due` (its namespace has fallen
   behind its fair share: queue.tenant_shares), is served in order, whatever it costs
   (on a worker that holds its checkpoint if one is free, else with a load);
2. a job whose checkpoint is hot on a free worker goes there: jobs of one model gather
   on the workers that hold it;
3. free workers left load a checkpoint only where waiting for its holders would cost
   more than the load: a model's *uncovered* demand is its waiting jobs less those its
   holders would serve within `horizon` load times (from when each holder's slots are
   expected to free); the model with the most uncovered demand is loaded first, on the
   free worker whose eviction the queue needs least. A job nobody places waits.

Each worker given a job is told what to keep hot (`keep_hot`): its predicted hot set
after the round, so to load it evicts the model the queue needs least (never a pinned
one: pre-warmed models). The hot sets a round starts from are predicted the same way
(cache.fleet), so the next round sees a load before the worker reports it.
"""

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Job:
    """A waiting job. `workers`: the ids of the workers that may run it (pool, tier,
    VRAM); None: any. `due`: served in order, as if it had run out of patience. `rank`:
    its tier's place in the fair order: a rank is planned before the next, so grouping by
    model never puts a lower tier's job before a higher one's."""

    key: str
    model: str
    waited: float
    workers: frozenset[str] | None = None
    due: bool = False
    rank: int = 0

    def may_run_on(self, worker_id: str) -> bool:
        return self.workers is None or worker_id in self.workers


@dataclass(frozen=True)
class Worker:
    """A worker as planning sees it: `hot` least recently used first; `hot_slots` None
    when its hot tier's size is not known (it never needs to evict, as far as the plan
    knows); `frees_in`: for each busy slot, the expected seconds until it frees."""

    worker_id: str
    free_slots: int
    hot: tuple[str, ...] = ()
    hot_slots: int | None = None
    frees_in: tuple[float, ...] = ()
    pinned: frozenset[str] = frozenset()
    # Checkpoints on its local disk: loading one of them is cheaper.
    warm: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Costs:
    """Expected seconds to load a checkpoint and to run a job once it is loaded, per
    model where observed, else the defaults."""

    load_seconds: float
    run_seconds: float
    load_by_model: Mapping[str, float] = field(default_factory=dict)
    run_by_model: Mapping[str, float] = field(default_factory=dict)

    def load(self, model: str) -> float:
        return self.load_by_model.get(model, self.load_seconds)

    def run(self, model: str) -> float:
        return max(self.run_by_model.get(model, self.run_seconds), 0.001)


@dataclass(frozen=True)
class Knobs:
    # A job that has waited this many load times is served in order, whatever it costs.
    patience: float = 24.0
    # Holders are waited for if they would serve a job within this many load times.
    horizon: float = 2.5
    # What a model is worth keeping hot: its waiting jobs plus the jobs expected to
    # arrive (by its recent rate) within this many load times.
    foresight: float = 10.0


class Popularity:
    """Each model's recent arrival rate (jobs per second), decayed with a half-life, so
    that what stays hot is what the queue will need, not only what it holds now."""

    def __init__(self, half_life: float = 600.0) -> None:
        self.half_life = half_life
        self._counts: dict[str, float] = {}
        self._at = 0.0

    def observe(self, model: str, now: float) -> None:
        self._decay(now)
        self._counts[model] = self._counts.get(model, 0.0) + 1.0

    def rates(self, now: float) -> dict[str, float]:
        self._decay(now)
        scale = math.log(2) / self.half_life  # a decayed count over its mean age
        return {model: count * scale for model, count in self._counts.items()}

    def _decay(self, now: float) -> None:
        if now > self._at:
            factor = 0.5 ** ((now - self._at) / self.half_life)
            self._counts = {m: c * factor for m, c in self._counts.items() if c * factor > 0.01}
            self._at = now


@dataclass(frozen=True)
class Plan:
    # (job, worker id) in the order they should be dispatched.
    assignments: list[tuple[Job, str]]
    # worker id -> checkpoints it should keep hot (its predicted hot set after the
    # round, least recently used first), for each worker given a job.
    keep_hot: dict[str, list[str]]


@dataclass
class _Slotted:
    """A worker's state as the round changes it."""

    worker_id: str
    free: int
    hot: list[str]
    hot_slots: int | None
    frees_in: list[float]
    pinned: frozenset[str]
    warm: frozenset[str]
    given: bool = False

    def holds(self, model: str) -> bool:
        return model in self.hot

    def victim(self, need: Callable[[str], float]) -> str | None:
        """What loading another model evicts: the least needed unpinned model (least
        recently used among equals); None while there is room."""
        if self.hot_slots is None or len(self.hot) < self.hot_slots:
            return None
        candidates = [model for model in self.hot if model not in self.pinned]
        if not candidates:
            return None
        return min(candidates, key=need)  # min keeps LRU order among equals

    def take(self, model: str, need: Callable[[str], float], costs: Costs) -> None:
        if self.holds(model):
            self.hot.remove(model)
            busy = costs.run(model)
        else:
            victim = self.victim(need)
            if victim is not None:
                self.hot.remove(victim)
            busy = costs.load(model) + costs.run(model)
        self.hot.append(model)
        self.free -= 1
        self.frees_in.append(busy)
        self.given = True


def plan(
    jobs: list[Job],
    workers: list[Worker],
    costs: Costs,
    knobs: Knobs = Knobs(),
    rates: Mapping[str, float] | None = None,
) -> Plan:
    """Assignments for this round (see the module's docstring); `rates`: each model's
    recent arrival rate (`Popularity.rates`)."""
    state = _Round(jobs, workers, costs, knobs, rates or {})
    for rank in sorted({job.rank for job in jobs}):
        _plan_rank(state, rank)
    return Plan(
        state.assignments,
        keep_hot={w.worker_id: list(w.hot) for w in state.workers.values() if w.given},
    )


def _plan_rank(state: "_Round", rank: int) -> None:
    """Steps 1 to 3 for the jobs of one rank, on the workers the ranks before left free."""
    patience = state.knobs.patience
    for job in [
        job
        for job in state.waiting
        if job.rank == rank and (job.due or job.waited >= patience * state.costs.load(job.model))
    ]:
        if free := state.eligible(job):
            state.assign(job, state.holder(job) or state.loader(job.model, free))
    for job in [job for job in state.waiting if job.rank == rank]:
        if holder := state.holder(job):
            state.assign(job, holder)
    while chosen := state.next_load(rank):
        job, worker = chosen
        state.assign(job, worker)
        # The rest of its model's jobs now find a holder with free slots first.
        for other in [o for o in state.waiting if o.model == job.model and o.rank == rank]:
            if worker.free > 0 and other.may_run_on(worker.worker_id):
                state.assign(other, worker)


class _Round:
    """One round's state, indexed so that a round over a large fleet stays cheap: the
    free workers, each model's holders, and each worker's eviction cost as first asked
    this round (asked again only after the worker takes a job)."""

    def __init__(
        self,
        jobs: list[Job],
        workers: list[Worker],
        costs: Costs,
        knobs: Knobs,
        rates: Mapping[str, float],
    ) -> None:
        self.costs, self.knobs, self.rates = costs, knobs, rates
        self.workers = {
            w.worker_id: _Slotted(
                w.worker_id,
                w.free_slots,
                list(w.hot),
                w.hot_slots,
                sorted(w.frees_in),
                w.pinned,
                w.warm,
            )
            for w in workers
        }
        self.free = {i: w for i, w in self.workers.items() if w.free > 0}
        self.holders: dict[str, set[str]] = {}
        for worker in self.workers.values():
            for model in worker.hot:
                self.holders.setdefault(model, set()).add(worker.worker_id)
        self.demand = Counter(job.model for job in jobs)
        self.waiting = list(jobs)
        self.assignments: list[tuple[Job, str]] = []
        self._costs: dict[str, float] = {}

    def need(self, model: str) -> float:
        """What keeping the model hot is worth: its waiting jobs and those expected."""
        expected = self.rates.get(model, 0.0) * self.knobs.foresight * self.costs.load(model)
        return self.demand[model] + expected

    def assign(self, job: Job, worker: _Slotted) -> None:
        before = set(worker.hot)
        worker.take(job.model, self.need, self.costs)
        for model in before - set(worker.hot):
            self.holders[model].discard(worker.worker_id)
        self.holders.setdefault(job.model, set()).add(worker.worker_id)
        self._costs.pop(worker.worker_id, None)
        if worker.free <= 0:
            self.free.pop(worker.worker_id, None)
        self.demand[job.model] -= 1
        self.waiting.remove(job)
        self.assignments.append((job, worker.worker_id))

    def eligible(self, job: Job) -> list[_Slotted]:
        """The free workers that may run the job."""
        if job.workers is None:
            return list(self.free.values())
        return [self.free[i] for i in job.workers & self.free.keys()]

    def holder(self, job: Job) -> _Slotted | None:
        """The free worker that may run the job and holds its model, with the most free
        slots (then by id)."""
        holders = [
            self.free[i]
            for i in self.holders.get(job.model, ())
            if i in self.free and job.may_run_on(i)
        ]
        return min(holders, key=lambda w: (-w.free, w.worker_id)) if holders else None

    def eviction_cost(self, worker: _Slotted) -> float:
        """What a load on the worker costs the queue: its victim's need (+1), 0 with room."""
        if worker.worker_id not in self._costs:
            victim = worker.victim(self.need)
            self._costs[worker.worker_id] = 0.0 if victim is None else self.need(victim) + 1.0
        return self._costs[worker.worker_id]

    def loader(self, model: str, free: list[_Slotted]) -> _Slotted:
        """The free worker where loading the model costs least: whose victim the queue
        needs least (none: room), then one with the model on its disk, then the most free
        slots, then by id."""
        return min(
            free,
            key=lambda w: (self.eviction_cost(w), model not in w.warm, -w.free, w.worker_id),
        )

    def next_load(self, rank: int) -> tuple[Job, _Slotted] | None:
        """The next load worth making: the model with the most uncovered demand (the first
        waiting among equals), its first job that a free worker may run, and that worker;
        a model whose load would evict less needed models on a worker that frees within
        the horizon waits for that worker."""
        deferred: set[str] = set()
        while self.free:
            best: tuple[int, Job, list[_Slotted]] | None = None
            seen = set(deferred)
            for job in self.waiting:
                if job.rank != rank or job.model in seen:
                    continue
                eligible = self.eligible(job)
                if not eligible:
                    continue
                seen.add(job.model)
                uncovered = self.demand[job.model] - self.served_by_holders(job.model)
                if uncovered > 0 and (best is None or uncovered > best[0]):
                    best = (uncovered, job, eligible)
            if best is None:
                return None
            _, job, eligible = best
            loader = self.loader(job.model, eligible)
            if not self.better_soon(job, loader):
                return job, loader
            deferred.add(job.model)
        return None

    def better_soon(self, job: Job, loader: _Slotted) -> bool:
        """A busy worker the job may run on frees within the horizon and would evict a
        model the queue needs less than `loader`'s victim (a job waits so once: for at
        most the horizon)."""
        horizon = self.knobs.horizon * self.costs.load(job.model)
        if job.waited >= horizon:
            return False
        cost = self.eviction_cost(loader)
        return any(
            worker.free <= 0
            and worker.frees_in
            and min(worker.frees_in) < horizon
            and job.may_run_on(worker.worker_id)
            and self.eviction_cost(worker) < cost
            for worker in self.workers.values()
        )

    def served_by_holders(self, model: str) -> int:
        """How many of the model's jobs its holders would start within the horizon."""
        horizon = self.knobs.horizon * self.costs.load(model)
        run = self.costs.run(model)
        served = 0
        for worker_id in self.holders.get(model, ()):
            for frees_in in self.workers[worker_id].frees_in:
                if frees_in < horizon:
                    served += int((horizon - frees_in) // run) + 1
        return served
