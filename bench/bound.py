"""Reference figures for a trace (bench/traces.py), so that a replay's loads and waits
(bench/replay.py) are reported against them:

- **belady**: Belady's optimal eviction on one cache of workers x hot-slots checkpoints,
  jobs in arrival order: the fewest loads any placement reaches *if jobs run in arrival
  order* (running them out of order, grouped by model, can go below it);
- **least_loaded**, **hot_first** and **planner**: a zero-overhead discrete-event
  simulation of the fleet (N workers of C slots, K hot checkpoints each, L seconds per
  checkpoint load, LoRAs free, dispatch instant) under least-loaded placement, hot-first
  placement (the model hot on a free worker, else the least loaded; each worker evicts
  its least recently used idle model), and the operator's own planner
  (diffleet_operator.scheduler.planning, the same code the dispatch loop calls; workers
  evict by its keep_hot). Each gives checkpoint loads, p50/p99 wait (from a job's arrival
  to a worker taking it, before its load) and makespan (trace start to the last job's end).

Run: `python -m bench.bound TRACE --workers 8 --concurrency 1 --hot-slots 2
--load-seconds 8 --json OUT.json [--markdown OUT.md]`.
"""

import argparse
import heapq
import json
import math
import shlex
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.traces import Record, load
from diffleet_operator.scheduler import planning

POLICIES = ("least_loaded", "hot_first", "planner")
KNOBS = planning.Knobs()


def belady(models: Sequence[str], slots: int) -> int:
    """Loads of a cache of `slots` checkpoints serving `models` in order, evicting the one
    needed again furthest in the future (never: first)."""
    next_use = [math.inf] * len(models)
    last: dict[str, int] = {}
    for index in range(len(models) - 1, -1, -1):
        next_use[index] = last.get(models[index], math.inf)
        last[models[index]] = index
    cached: dict[str, float] = {}  # model -> its next use
    loads = 0
    for index, model in enumerate(models):
        if model not in cached:
            loads += 1
            if len(cached) >= slots:
                del cached[max(cached, key=lambda m: cached[m])]
        cached[model] = next_use[index]
    return loads


@dataclass(frozen=True)
class Fleet:
    workers: int
    concurrency: int
    hot_slots: int
    load_seconds: float


@dataclass
class _Worker:
    worker_id: str
    # Least recently used first.
    hot: list[str] = field(default_factory=list)
    # Per busy slot: (when it frees, its model, when its run starts after any load).
    busy: list[tuple[float, str, float]] = field(default_factory=list)
    keep_hot: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Job:
    index: int
    t: float
    model: str
    seconds: float


class Simulation:
    """One policy over one trace. `choose(waiting, workers, now)` returns the jobs to start
    now and where, and the keep_hot of each worker given one."""

    def __init__(
        self,
        fleet: Fleet,
        records: Sequence[Record],
        run_estimate: float,
        knobs: planning.Knobs = KNOBS,
    ) -> None:
        self.fleet = fleet
        self.knobs = knobs
        self.jobs = [
            _Job(i, float(r["t"]), r["model"], float(r["seconds"])) for i, r in enumerate(records)
        ]
        self.workers = [_Worker(f"w{i:04d}") for i in range(fleet.workers)]
        self.run_estimate = run_estimate
        self.loads = 0
        self.waits: list[float] = []
        self.end = 0.0

    def free_slots(self, worker: _Worker) -> int:
        return self.fleet.concurrency - len(worker.busy)

    def start(self, job: _Job, worker: _Worker, now: float) -> None:
        """The worker takes the job: loads its checkpoint unless hot (evicting an idle
        model not in keep_hot first, least recently used first), then runs it."""
        ready = now
        if job.model in worker.hot:
            worker.hot.remove(job.model)
            ready = max([now] + [run for _, m, run in worker.busy if m == job.model])
        else:
            self.loads += 1
            ready = now + self.fleet.load_seconds
            self._evict(worker)
        worker.hot.append(job.model)
        ends = ready + job.seconds
        worker.busy.append((ends, job.model, ready))
        self.waits.append(now - job.t)
        self.end = max(self.end, ends)

    def _evict(self, worker: _Worker) -> None:
        if len(worker.hot) < self.fleet.hot_slots:
            return
        in_use = {model for _, model, _ in worker.busy}
        idle = [model for model in worker.hot if model not in in_use]
        spare = [model for model in idle if model not in worker.keep_hot]
        if victims := spare or idle:
            worker.hot.remove(victims[0])

    def run(
        self, choose: Callable[[list[_Job], float], list[tuple[_Job, _Worker]]]
    ) -> dict[str, float]:
        arrivals = list(self.jobs)
        ends: list[float] = []
        waiting: list[_Job] = []
        wakes: list[float] = []
        now = 0.0
        while arrivals or waiting:
            candidates = [arrivals[0].t] if arrivals else []
            candidates += ends[:1] + wakes[:1]
            now = min(candidates)
            while arrivals and arrivals[0].t <= now:
                waiting.append(arrivals.pop(0))
            while ends and ends[0] <= now:
                heapq.heappop(ends)
            while wakes and wakes[0] <= now:
                heapq.heappop(wakes)
            for worker in self.workers:
                worker.busy = [slot for slot in worker.busy if slot[0] > now]
            for job, worker in choose(waiting, now):
                waiting.remove(job)
                self.start(job, worker, now)
                heapq.heappush(ends, worker.busy[-1][0])
            if waiting and not ends and not arrivals and not wakes:
                raise RuntimeError("jobs wait with nothing left to wake the fleet")
            if waiting:
                self._wake_later(waiting, now, wakes)
        return {
            "checkpoint_loads": self.loads,
            "p50_wait_s": round(percentile(self.waits, 50), 2),
            "p99_wait_s": round(percentile(self.waits, 99), 2),
            "makespan_s": round(self.end, 1),
        }

    def _wake_later(self, waiting: list[_Job], now: float, wakes: list[float]) -> None:
        """The planner serves a job in order once it has waited `patience` loads: a wake
        then, in case no arrival or completion comes first."""
        patience = self.knobs.patience * self.fleet.load_seconds
        due = min(job.t for job in waiting) + patience
        if due > now and due not in wakes:
            heapq.heappush(wakes, due)


def least_loaded(sim: Simulation, *, hot_first: bool) -> Callable[..., list[Any]]:
    """Jobs in arrival order, each on a free worker: (the model hot first, if hot_first)
    the least loaded, then the lowest id; the order the operator's placement used."""

    def choose(waiting: list[_Job], now: float) -> list[tuple[_Job, _Worker]]:
        chosen = []
        taken: dict[str, int] = {}
        for job in waiting:
            free = [w for w in sim.workers if sim.free_slots(w) - taken.get(w.worker_id, 0) > 0]
            if not free:
                break
            worker = min(
                free,
                key=lambda w: (
                    hot_first and job.model not in w.hot,
                    len(w.busy) + taken.get(w.worker_id, 0),
                    w.worker_id,
                ),
            )
            taken[worker.worker_id] = taken.get(worker.worker_id, 0) + 1
            chosen.append((job, worker))
        return chosen

    return choose


def planner(sim: Simulation) -> Callable[..., list[Any]]:
    """The operator's planner over the whole queue; workers evict by its keep_hot."""
    costs = planning.Costs(load_seconds=sim.fleet.load_seconds, run_seconds=sim.run_estimate)
    by_id = {w.worker_id: w for w in sim.workers}
    popularity = planning.Popularity()
    seen: set[int] = set()

    def choose(waiting: list[_Job], now: float) -> list[tuple[_Job, _Worker]]:
        jobs = {str(job.index): job for job in waiting}
        for job in waiting:
            if job.index not in seen:
                seen.add(job.index)
                popularity.observe(job.model, job.t)
        views = [
            planning.Worker(
                worker_id=w.worker_id,
                free_slots=sim.free_slots(w),
                hot=tuple(w.hot),
                hot_slots=sim.fleet.hot_slots,
                frees_in=tuple(max(run + sim.run_estimate - now, 0.0) for _, _, run in w.busy),
            )
            for w in sim.workers
        ]
        queued = [planning.Job(key, job.model, now - job.t) for key, job in jobs.items()]
        result = planning.plan(queued, views, costs, sim.knobs, popularity.rates(now))
        for worker_id, keep in result.keep_hot.items():
            by_id[worker_id].keep_hot = keep
        return [(jobs[job.key], by_id[worker_id]) for job, worker_id in result.assignments]

    return choose


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def simulate(
    records: Sequence[Record],
    fleet: Fleet,
    policy: str,
    knobs: planning.Knobs = KNOBS,
) -> dict[str, float]:
    run_estimate = statistics.fmean(float(r["seconds"]) for r in records)
    sim = Simulation(fleet, records, run_estimate, knobs)
    if policy == "planner":
        return sim.run(planner(sim))
    return sim.run(least_loaded(sim, hot_first=policy == "hot_first"))


def reference(
    records: Sequence[Record],
    workers: int,
    concurrency: int,
    hot_slots: int,
    load_seconds: float,
    knobs: planning.Knobs = KNOBS,
) -> dict[str, Any]:
    """Every reference figure for the trace on this fleet."""
    fleet = Fleet(workers, concurrency, hot_slots, load_seconds)
    return {
        "jobs": len(records),
        "fleet": vars(fleet),
        "belady": {"checkpoint_loads": belady([r["model"] for r in records], workers * hot_slots)},
        **{policy: simulate(records, fleet, policy, knobs) for policy in POLICIES},
    }


def markdown(result: dict[str, Any], command: str, trace_command: str | None) -> str:
    bound = result["belady"]["checkpoint_loads"]
    made = f"`{trace_command}`" if trace_command else "bench/traces.py"
    lines = [
        "# Placement against the bound",
        "",
        f"Generated by `{command}` (bench/bound.py); the trace by {made}.",
        "",
        f"{result['jobs']} jobs; fleet: {result['fleet']}. Zero-overhead simulation: "
        "dispatch is instant; wait is from a job's arrival to a worker taking it.",
        "",
        "| placement | checkpoint loads | vs Belady | p50 wait (s) | p99 wait (s) | makespan (s) |",
        "|---|---|---|---|---|---|",
        f"| Belady, arrival order (one cache of N x K) | {bound} | 1.00x | | | |",
    ]
    for policy in POLICIES:
        r = result[policy]
        lines.append(
            f"| {policy.replace('_', '-')} | {r['checkpoint_loads']} | "
            f"{r['checkpoint_loads'] / bound:.2f}x | {r['p50_wait_s']} | {r['p99_wait_s']} | "
            f"{r['makespan_s']} |"
        )
    planned, fastest = result["planner"], result["least_loaded"]
    lines += [
        "",
        f"The planner: {planned['checkpoint_loads'] / bound:.2f}x the arrival-order bound's "
        f"loads, p99 wait {planned['p99_wait_s'] / max(fastest['p99_wait_s'], 0.01):.2f}x "
        "least-loaded placement's.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--hot-slots", type=int, required=True)
    parser.add_argument("--load-seconds", type=float, required=True)
    parser.add_argument("--json", help="write the figures here (else to stdout)")
    parser.add_argument("--markdown", help="also write a table here")
    parser.add_argument("--trace-command", help="how the trace was made, for the table")
    args = parser.parse_args(argv)
    result = reference(
        load(args.trace), args.workers, args.concurrency, args.hot_slots, args.load_seconds
    )
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    else:
        sys.stdout.write(text + "\n")
    if args.markdown:
        command = "python -m bench.bound " + shlex.join(sys.argv[1:] if argv is None else argv)
        text = markdown(result, command, args.trace_command)
        Path(args.markdown).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
