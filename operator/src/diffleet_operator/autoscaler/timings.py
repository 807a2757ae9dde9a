"""The autoscaler's timing estimates, refined by what it observes: each model's run time
and load time (from the workers' reports) and how long a new worker takes from being
decided to announcing itself (from the fleet). Until observed, the operator's settings."""

from dataclasses import dataclass
from datetime import datetime

from diffleet_operator.autoscaler.demand import Estimates
from diffleet_operator.config import OperatorSettings
from diffleet_operator.moving_average import smoothed

# Runs whose report of success never came (lost workers) are forgotten past this many.
MAX_STARTED = 10_000


@dataclass(frozen=True)
class _Started:
    at: datetime
    # The models the worker held in VRAM when the run started.
    hot_models: frozenset[str]


@dataclass(frozen=True)
class _ScaleUp:
    since: float
    live: int


class Timings:
    def __init__(self, op: OperatorSettings) -> None:
        self.op = op
        self._run: dict[str, float] = {}
        self._load: dict[str, float] = {}
        self._worker_start: float | None = None
        self._started: dict[str, _Started] = {}
        self._scaling: dict[str, _ScaleUp] = {}

    def estimates(self) -> Estimates:
        return Estimates(
            worker_start_seconds=self._worker_start or self.op.autoscaler_worker_start_seconds,
            default_run_seconds=self.op.autoscaler_run_seconds,
            default_load_seconds=self.op.autoscaler_model_load_seconds,
            run_seconds=dict(self._run),
            load_seconds=dict(self._load),
        )

    def started(self, uid: str, at: datetime, hot_models: frozenset[str]) -> None:
        if len(self._started) >= MAX_STARTED:
            del self._started[next(iter(self._started))]
        self._started[uid] = _Started(at, hot_models)

    def ended(self, uid: str) -> None:
        self._started.pop(uid, None)

    def succeeded(self, uid: str, at: datetime, digest: str) -> None:
        """A run on a worker that held the model hot is a run time; on one that did not,
        its excess over the model's run time is a load time."""
        start = self._started.pop(uid, None)
        if start is None:
            return
        seconds = max((at - start.at).total_seconds(), 0.0)
        if digest in start.hot_models:
            self._run[digest] = smoothed(self._run.get(digest), seconds)
        elif digest in self._run:
            load = max(seconds - self._run[digest], 0.0)
            self._load[digest] = smoothed(self._load.get(digest), load)

    def pool_seen(self, pool: str, desired: int, live: int, now: float) -> None:
        """Each decision: a pool that wants more workers than it has starts a clock,
        which its next new worker stops (time.monotonic() `now`)."""
        pending = self._scaling.get(pool)
        if pending is not None and live > pending.live:
            self._worker_start = smoothed(self._worker_start, now - pending.since)
            pending = None
        if desired <= live:
            pending = None
        elif pending is None:
            pending = _ScaleUp(now, live)
        if pending is None:
            self._scaling.pop(pool, None)
        else:
            self._scaling[pool] = pending
