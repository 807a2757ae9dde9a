"""Synthetic job traces for the replay (bench/replay.py) and the placement bound
(bench/bound.py): JSON lines `{"t", "model", "lora", "seconds", "tenant", "tier"?}`.

A trace is a seeded, deterministic function of its parameters (`TraceShape`):
- steady traffic: Poisson arrivals whose model is Zipf-distributed over `models`
  checkpoints (rank r drawn with weight 1 / r^zipf_s);
- bursts: every `burst_every` seconds a tenant submits a sweep, `burst_prompts` prompts
  each rendered with `burst_models` checkpoints drawn uniformly (comparing checkpoints),
  prompt after prompt, within `burst_seconds`: far more distinct models at once than a
  fleet holds hot, in an order that makes arrival-order caching thrash;
- the arrival rate keeps a fleet of `workers` x `concurrency` slots `utilization` busy
  on average with service time alone (loads come on top, and depend on placement);
- a LoRA is added to a `lora_share` of the jobs (LoRAs load for free); the service time
  once loaded is log-normal around `seconds`; tenants submit with Zipf weights (one
  heavy tenant, a tail of light ones).

Run: `python -m bench.traces --jobs 3000 > trace.jsonl` (see --help for the rest).
"""

import argparse
import json
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict


class Record(TypedDict, total=False):
    t: float
    model: str
    lora: str | None
    seconds: float
    tenant: str
    tier: str


@dataclass(frozen=True)
class TraceShape:
    """The defaults make the closing note's trace: 3,000 jobs on 8 workers of 1 slot and
    2 hot slots with 8 s loads (docs/operator.md, "Placement", says why these values)."""

    jobs: int = 3000
    models: int = 40
    zipf_s: float = 1.5
    workers: int = 8
    concurrency: int = 1
    seconds: float = 3.0
    # Spread of the log-normal service time (sigma of its log).
    seconds_sigma: float = 0.5
    utilization: float = 0.2
    burst_every: float = 1800.0
    burst_prompts: int = 4
    burst_models: int = 30
    burst_seconds: float = 20.0
    loras: int = 10
    lora_share: float = 0.3
    tenants: int = 3
    tiers: tuple[str, ...] = ()
    seed: int = 15

    @property
    def burst_jobs(self) -> int:
        if self.burst_every <= 0:
            return 0
        return self.burst_prompts * min(self.burst_models, self.models)

    @property
    def rate(self) -> float:
        """Jobs per second of the steady traffic."""
        total = self.utilization * self.workers * self.concurrency / self.seconds
        bursts = self.burst_jobs / self.burst_every if self.burst_jobs else 0.0
        if total <= bursts:
            raise ValueError("the bursts alone exceed the utilization")
        return total - bursts


def model_name(rank: int) -> str:
    return f"model-{rank:02d}"


class _Draw:
    def __init__(self, shape: TraceShape) -> None:
        self.shape = shape
        self.rng = random.Random(shape.seed)  # noqa: S311 - a seeded trace, no secret
        self.model_weights = zipf_weights(shape.models, shape.zipf_s)
        self.tenant_weights = zipf_weights(shape.tenants, 1.0)
        # The mean of the service time's log, for a mean of `seconds`.
        self.mu = math.log(shape.seconds) - shape.seconds_sigma**2 / 2

    def record(self, t: float, rank: int | None = None, tenant: str | None = None) -> Record:
        rng, shape = self.rng, self.shape
        if rank is None:
            rank = rng.choices(range(shape.models), self.model_weights)[0]
        lora = None
        if shape.loras and rng.random() < shape.lora_share:
            lora = f"lora-{rng.randrange(shape.loras):02d}"
        record: Record = {
            "t": round(t, 3),
            "model": model_name(rank),
            "lora": lora,
            "seconds": round(rng.lognormvariate(self.mu, shape.seconds_sigma), 2),
        }
        if tenant := tenant or self.tenant():
            record["tenant"] = tenant
        if shape.tiers:
            record["tier"] = rng.choice(shape.tiers)
        return record

    def tenant(self) -> str | None:
        if not self.shape.tenants:
            return None
        return f"tenant-{self.rng.choices(range(self.shape.tenants), self.tenant_weights)[0]}"

    def sweep(self, start: float) -> list[Record]:
        shape = self.shape
        ranks = self.rng.sample(range(shape.models), min(shape.burst_models, shape.models))
        tenant = self.tenant()
        jobs = [rank for _ in range(shape.burst_prompts) for rank in ranks]
        gap = shape.burst_seconds / len(jobs)
        return [self.record(start + i * gap, rank, tenant) for i, rank in enumerate(jobs)]


def generate(shape: TraceShape) -> list[Record]:
    """The trace's records in arrival order."""
    draw = _Draw(shape)
    records: list[Record] = []
    swept: list[Record] = []
    next_sweep = shape.burst_every / 2 if shape.burst_jobs else math.inf
    t = draw.rng.expovariate(shape.rate)
    while len(records) < shape.jobs:
        if next_sweep <= t and not swept:
            swept = draw.sweep(next_sweep)
            next_sweep += shape.burst_every
        if swept and swept[0]["t"] <= t:
            records.append(swept.pop(0))
        else:
            records.append(draw.record(t))
            t += draw.rng.expovariate(shape.rate)
    return records


def zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (rank + 1) ** s for rank in range(n)]


def load(path: str) -> list[Record]:
    """A trace file's records, in arrival order."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    records: list[Record] = [json.loads(line) for line in lines if line.strip()]
    return sorted(records, key=lambda record: record["t"])


def main(argv: list[str] | None = None) -> None:
    defaults = TraceShape()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in vars(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, tuple):
            parser.add_argument(flag, nargs="*", default=list(value), help="e.g. high low")
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"({value})")
    args: dict[str, Any] = vars(parser.parse_args(argv))
    args["tiers"] = tuple(args["tiers"])
    for record in generate(TraceShape(**args)):
        sys.stdout.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
