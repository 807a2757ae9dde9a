"""Everything the operator's handlers and loops share, built once at start-up."""

from dataclasses import dataclass, field

import kopf

from diffleet_core.broker import Broker
from diffleet_core.settings import Settings
from diffleet_operator.autoscaler.controller import PoolController
from diffleet_operator.autoscaler.loop import Autoscaler
from diffleet_operator.cache.fleet import FleetInventory
from diffleet_operator.cache.jobs import JobCache
from diffleet_operator.cache.model_index import ModelIndex
from diffleet_operator.cache.pools import PoolIndex
from diffleet_operator.cache.worker_pods import WorkerPods
from diffleet_operator.config import OperatorSettings
from diffleet_operator.content_policy import ContentPolicies
from diffleet_operator.dispatch_pause import DispatchPause
from diffleet_operator.kube import Kube
from diffleet_operator.quarantine import Quarantine
from diffleet_operator.queue.held import HeldAdmissions
from diffleet_operator.queue.tenant_queues import TenantQueues
from diffleet_operator.status_writer import StatusWriter
from diffleet_operator.styles import JobStyles
from diffleet_operator.training.service import Trainings


@dataclass
class Runtime:
    settings: Settings
    operator: OperatorSettings
    kube: Kube
    broker: Broker
    fleet: FleetInventory
    jobs: JobCache
    models: ModelIndex
    held: HeldAdmissions = field(default_factory=HeldAdmissions)
    pools: PoolIndex = field(default_factory=PoolIndex)
    worker_pods: WorkerPods = field(default_factory=WorkerPods)
    dispatch_pause: DispatchPause = field(default_factory=DispatchPause)
    queues: TenantQueues = field(init=False)
    policies: ContentPolicies = field(init=False)
    styles: JobStyles = field(init=False)
    statuses: StatusWriter = field(init=False)
    quarantine: Quarantine = field(init=False)
    autoscaler: Autoscaler = field(init=False)
    pool_controller: PoolController = field(init=False)
    trainings: Trainings = field(init=False)

    def __post_init__(self) -> None:
        self.queues = TenantQueues(self.broker, self.operator.prefetch_per_queue)
        self.policies = ContentPolicies(self.kube.config_map_data, self.settings.system_namespace)
        self.styles = JobStyles(self.kube.get_style_preset, self.settings.system_namespace)
        self.statuses = StatusWriter(
            self.kube.patch_job_status, self.operator.status_window_seconds, self.jobs
        )
        self.quarantine = Quarantine(self.kube)
        self.autoscaler = Autoscaler(self)
        self.trainings = Trainings(self)
        self.pool_controller = PoolController(
            self.kube,
            self.pools,
            self.worker_pods,
            self.fleet,
            namespace=self.operator.fleet_namespace,
            image=self.operator.worker_image,
            wake=self.autoscaler.trigger,
        )

    @staticmethod
    def of(memo: kopf.Memo) -> "Runtime":
        """The runtime that `main.run` put in kopf's memo for every handler."""
        rt: Runtime = memo["runtime"]
        return rt
