"""The dispatch loop's view for the planner (scheduler.planning): the jobs of a lookahead
window of the fair order, with the workers each may run on, and the fleet with each
worker's predicted hot set, when its busy slots are expected to free, and the pre-warmed
models it holds (pinned). A model's expected load seconds are the autoscaler's
observations (autoscaler.timings); its run seconds, how long its jobs held a slot of a
worker that had it hot, dispatch to end (cache.fleet `occupancy`: the run and the
protocol's overhead), else the autoscaler's observed run time; for a model not yet
observed, the median of those that are, else the operator's settings
(DIFFLEET_OPERATOR_AUTOSCALER_MODEL_LOAD_SECONDS and DIFFLEET_OPERATOR_AUTOSCALER_RUN_SECONDS).
"""

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

from diffleet_core.resources.generation_job import Tier
from diffleet_operator import status
from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.queue.admission import NotReady, ready_model, resolve_job_models
from diffleet_operator.runtime import Runtime
from diffleet_operator.scheduler import planning
from diffleet_operator.scheduler.buffer import Buffered
from diffleet_operator.scheduler.eligibility import Requirements, job_requirements, worker_fits

# How many buffered jobs, in fair order, each round plans over.
LOOKAHEAD = 256
KNOBS = planning.Knobs()


@dataclass(frozen=True)
class Planned:
    """A buffered job's worker this round, and what that worker should keep hot."""

    worker_id: str
    keep_hot: list[str]


@dataclass(frozen=True)
class Round:
    """uid -> where it goes now; `waiting`: the uids the planner chose to leave waiting
    (the window's other jobs it could not plan: not cached or not active, a model not
    Ready, no worker that may run them)."""

    planned: dict[str, Planned]
    waiting: frozenset[str]


class BatchPlanner:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.popularity = planning.Popularity()
        # The jobs of the last window: each job counts once in the models' popularity.
        self._seen: set[str] = set()
        # (namespace, name) -> (resourceVersion, digest if pre-warmed) as last read.
        self._pinned_by_model: dict[tuple[str, str], tuple[str | None, str | None]] = {}

    def plan(
        self,
        window: list[tuple[Tier, Buffered]],
        fleet: list[WorkerView],
        due: frozenset[str] = frozenset(),
    ) -> Round:
        """`due`: the uids to serve in order (their namespace fell behind its share)."""
        monotonic = time.monotonic()
        estimates = self.rt.autoscaler.timings.estimates()
        # A slot's occupancy where observed: the run and the protocol's overhead.
        runs = {**estimates.run_seconds, **self.rt.fleet.occupancy()}
        costs = planning.Costs(
            load_seconds=_typical(estimates.load_seconds, estimates.default_load_seconds),
            run_seconds=_typical(runs, estimates.default_run_seconds),
            load_by_model=estimates.load_seconds,
            run_by_model=runs,
        )
        jobs = self._jobs(window, fleet, monotonic, due)
        pinned = self._pinned()
        workers = [worker_of(view, costs, pinned, monotonic) for view in fleet if not view.draining]
        result = planning.plan(jobs, workers, costs, KNOBS, self.popularity.rates(monotonic))
        planned = {
            job.key: Planned(worker_id, result.keep_hot[worker_id])
            for job, worker_id in result.assignments
        }
        return Round(planned, frozenset(job.key for job in jobs) - planned.keys())

    def _jobs(
        self,
        window: list[tuple[Tier, Buffered]],
        fleet: list[WorkerView],
        monotonic: float,
        due: frozenset[str],
    ) -> list[planning.Job]:
        """The window's jobs whose models are Ready and that some worker may run (a job
        that none may run waits without blocking the others)."""
        rt, now = self.rt, status.now()
        eligible: dict[Requirements, frozenset[str]] = {}
        # Each tier's rank: its place in the window (the fair order goes tier by tier).
        ranks: dict[Tier, int] = {}
        jobs: list[planning.Job] = []
        for tier, entry in window:
            uid = entry.admitted.job.uid
            job = rt.jobs.get(uid)
            if job is None or not job.active:  # judged (and dropped) without a plan
                continue
            spec = rt.styles.spec(job)
            models = resolve_job_models(
                rt.models, job.namespace, spec, rt.settings.system_namespace
            )
            if isinstance(models, NotReady):
                continue
            needs = job_requirements(models, tier, spec.gpu_class)
            if needs not in eligible:
                fit = (w.worker_id for w in fleet if worker_fits(w, needs, rt.pools))
                eligible[needs] = frozenset(fit)
            if eligible[needs]:
                waited = (now - job.created).total_seconds()
                rank = ranks.setdefault(tier, len(ranks))
                jobs.append(
                    planning.Job(uid, needs.model_digest, waited, eligible[needs], uid in due, rank)
                )
        for queued in jobs:
            if queued.key not in self._seen:
                self.popularity.observe(queued.model, monotonic)
        self._seen = {queued.key for queued in jobs}
        return jobs

    def _pinned(self) -> frozenset[str]:
        """The pre-warmed models (ModelCache spec.warm.replicas above 0); a ModelCache is
        read again only when its resourceVersion changed (every round asks)."""
        pinned, seen = set(), set()
        for body in self.rt.models.all():
            meta = body["metadata"]
            key, version = (meta["namespace"], meta["name"]), meta.get("resourceVersion")
            seen.add(key)
            known = self._pinned_by_model.get(key)
            if known is None or known[0] != version:
                model = ready_model(body)
                digest = None
                if not isinstance(model, NotReady) and model.spec.warm.replicas > 0:
                    digest = model.ref.digest
                known = self._pinned_by_model[key] = (version, digest)
            if known[1] is not None:
                pinned.add(known[1])
        for gone in self._pinned_by_model.keys() - seen:
            del self._pinned_by_model[gone]
        return frozenset(pinned)


def _typical(observed: Mapping[str, float], setting: float) -> float:
    """A model's expected seconds until it is observed: the median of the models
    observed (one fleet loads and runs its models alike), else the setting."""
    return statistics.median(observed.values()) if observed else setting


def worker_of(
    view: WorkerView, costs: planning.Costs, pinned: frozenset[str], monotonic: float
) -> planning.Worker:
    """The worker as the planner sees it: a busy slot frees when its job has run its
    model's expected run time since it was dispatched (`monotonic`: time.monotonic())."""
    known = {uid: (digest, since) for uid, digest, since in view.running}
    frees_in = []
    for uid in view.jobs:
        if uid in known:
            digest, since = known[uid]
            frees_in.append(max(costs.run(digest) - (monotonic - since), 0.0))
        else:  # a job this operator did not dispatch: half a run left, on average
            frees_in.append(costs.run_seconds / 2)
    return planning.Worker(
        worker_id=view.worker_id,
        free_slots=view.free_slots,
        hot=view.hot_order,
        hot_slots=view.hot_slots,
        frees_in=tuple(frees_in),
        pinned=pinned & set(view.hot_order),
        warm=view.warm_models,
    )
