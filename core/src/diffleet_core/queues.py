"""RabbitMQ topology: every exchange and queue name of the platform, defined once.

    diffleet.jobs.<tier>.<ns>  durable, one per tier and job namespace (tenant), declared
                               on first use: admitted jobs waiting for a GPU
    diffleet.jobs.<tier>       durable, one per tier: where releases before tenant queues
                               published; still drained, never published to
    diffleet.worker.<id>       durable, one per worker: jobs dispatched to that worker
    diffleet.results           durable: started / succeeded / failed from workers
    diffleet.progress          topic exchange, routing key = job uid: transient progress
                               (a training's: training.<uid>)
    diffleet.trainings         durable: admitted trainings waiting for a slot no
                               inference job wants (below every tier)
    diffleet.trainings.results durable: a training's events from its worker
    diffleet.control           topic exchange, routing key = worker id: cancel orders
    diffleet.delay.<seconds>   fanout exchange and queue with that message TTL, dead-
                               lettering to the default exchange: a requeue with backoff
                               (the message keeps its routing key, the tenant queue's name)

All names carry a prefix (settings.queue_prefix, "diffleet" by default) so that a test
or a second installation can share a broker without sharing queues.
"""

import re
from dataclasses import dataclass

from diffleet_core.resources.generation_job import Tier


@dataclass(frozen=True)
class Topology:
    """Names of the queues and exchanges under one prefix."""

    prefix: str = "diffleet"

    def tenant_queue(self, tier: Tier, namespace: str) -> str:
        """Admitted jobs of one namespace at one tier (a namespace name has no dots)."""
        return f"{self.prefix}.jobs.{tier.value}.{namespace}"

    def tenant_queues_regex(self, tier: Tier) -> str:
        """A regular expression matching every tenant queue of the tier (and no other
        queue): what a queue-length autoscaler sums over, e.g. KEDA's RabbitMQ scaler."""
        return rf"^{re.escape(self.prefix)}\.jobs\.{tier.value}\.[^.]+$"

    def tier_queue(self, tier: Tier) -> str:
        """The tier's queue of releases before tenant queues: drained, never published to."""
        return f"{self.prefix}.jobs.{tier.value}"

    def worker_queue(self, worker_id: str) -> str:
        return f"{self.prefix}.worker.{worker_id}"

    @property
    def results_queue(self) -> str:
        return f"{self.prefix}.results"

    @property
    def progress_exchange(self) -> str:
        return f"{self.prefix}.progress"

    @property
    def training_queue(self) -> str:
        return f"{self.prefix}.trainings"

    @property
    def training_results_queue(self) -> str:
        return f"{self.prefix}.trainings.results"

    @property
    def control_exchange(self) -> str:
        return f"{self.prefix}.control"

    def delay(self, seconds: int) -> str:
        """Name of the delay exchange and queue that hold a message for `seconds`."""
        return f"{self.prefix}.delay.{seconds}"

    def tier_queues(self) -> dict[Tier, str]:
        """Every tier's queue of releases before tenant queues, highest tier first."""
        return {tier: self.tier_queue(tier) for tier in Tier}


BACKOFF_STEPS_SECONDS = (1, 2, 4, 8, 16, 32, 64)


def backoff_step(seconds: float) -> int:
    """The smallest delay step that is at least `seconds` (capped at the largest)."""
    for step in BACKOFF_STEPS_SECONDS:
        if step >= seconds:
            return step
    return BACKOFF_STEPS_SECONDS[-1]


# Routing keys of trainings' progress on the progress exchange; a job's key (its uid)
# has no dot, so TRAINING_PROGRESS_KEYS matches trainings' only.
TRAINING_PROGRESS_KEYS = "training.*"


def training_progress_key(uid: str) -> str:
    return f"training.{uid}"
