"""GPUPool (diffleet.io/v1alpha1, cluster-scoped): one pool of GPU workers, its worker pod
and its scaling bounds. The pool's name is what its workers announce and what
ModelCache spec.pools names.

The bounds and defaults here are those of crds/gpupools.diffleet.io.yaml, and
`gpu_pool_rule_violations` holds the CRD's CEL rules with the same messages.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import (
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from diffleet_core.resources.base import SpecModel, StatusModel
from diffleet_core.resources.conditions import Condition
from diffleet_core.resources.generation_job import ANY_GPU_CLASS, Tier
from diffleet_core.resources.text import NO_CONTROL_CHARACTERS, GpuType

KIND = "GPUPool"
PLURAL = "gpupools"

# The label of a pool's nodes (kwok nodes, Karpenter NodePools): a pool's worker pods
# select `NODE_POOL_LABEL: <pool name>` unless spec.nodeSelector says otherwise.
NODE_POOL_LABEL = "diffleet.io/pool"
# The fleet namespace of the operator that serves a GPUPool (none: diffleet-system's), so
# that two installations, or tests, each with a fleet of its own, share a cluster.
FLEET_LABEL = "diffleet.io/fleet"
# Where Events about a GPUPool go, being cluster-scoped (client-go's choice too), and the
# reasons of the autoscaler's decisions among them (GET /v1/fleet lists them).
EVENTS_NAMESPACE = "default"
SCALED_UP = "ScaledUp"
SCALED_DOWN = "ScaledDown"
# The extended resource a worker pod requests, and the taint of GPU nodes.
GPU_RESOURCE = "nvidia.com/gpu"

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# A Kubernetes quantity: 2, "500m", "16Gi" (the CRD's x-kubernetes-int-or-string).
Quantity = Annotated[
    StrictInt | Annotated[StrictStr, Field(pattern=QUANTITY_PATTERN)],
    WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
    NO_CONTROL_CHARACTERS,
]
# A DNS subdomain, as Kubernetes names a ServiceAccount or a PriorityClass.
SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
Subdomain = Annotated[
    str, Field(min_length=1, max_length=253, pattern=SUBDOMAIN_PATTERN), NO_CONTROL_CHARACTERS
]
String = Annotated[str, NO_CONTROL_CHARACTERS]

MAX_REPLICAS_RULE = "maxReplicas must be at least minReplicas"
ANY_GPU_TYPE_RULE = "gpuType may not be any: a job's gpuClass any means every GPU type"


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(SpecModel):
    """A Kubernetes toleration, as in a pod's spec.tolerations."""

    key: String | None = Field(default=None, description="Taint key; empty with Exists: all.")
    operator: TolerationOperator = Field(
        default=TolerationOperator.EQUAL, description="Exists or Equal (to value)."
    )
    value: String | None = Field(default=None, description="Taint value, with Equal.")
    effect: TaintEffect | None = Field(
        default=None, description="NoSchedule, PreferNoSchedule or NoExecute; empty: all."
    )
    toleration_seconds: StrictInt | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


GPU_TOLERATION = Toleration(
    key=GPU_RESOURCE, operator=TolerationOperator.EXISTS, effect=TaintEffect.NO_SCHEDULE
)


class EnvVar(SpecModel):
    """An environment variable of the worker container, as in a pod's env."""

    name: String = Field(min_length=1, description="Name of the variable.")
    value: String | None = Field(default=None, description="Its value.")
    value_from: dict[str, object] | None = Field(
        default=None,
        description="Its source (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef).",
    )


class KeyRef(SpecModel):
    name: Subdomain = Field(description="Name of the ConfigMap or Secret.")
    optional: StrictBool | None = Field(default=None, description="Whether it may be absent.")


class EnvFromSource(SpecModel):
    """Variables from a whole ConfigMap or Secret, as in a pod's envFrom."""

    prefix: String | None = Field(default=None, description="Prepended to every name.")
    config_map_ref: KeyRef | None = Field(default=None, description="A ConfigMap.")
    secret_ref: KeyRef | None = Field(default=None, description="A Secret.")


class Resources(SpecModel):
    """Compute resources of the worker container, beyond the GPUs (gpusPerWorker)."""

    requests: dict[String, Quantity] | None = Field(
        default=None, description="Resources reserved for the container (cpu, memory)."
    )
    limits: dict[String, Quantity] | None = Field(
        default=None, description="Most the container may use (cpu, memory)."
    )


class WorkerTemplate(SpecModel):
    """What the operator merges into each worker pod; unknown fields are refused."""

    image: String | None = Field(default=None, description="Worker image.")
    image_pull_policy: PullPolicy | None = Field(
        default=None, description="Always, IfNotPresent or Never."
    )
    command: list[String] | None = Field(default=None, description="Worker command.")
    env: list[EnvVar] | None = Field(default=None, description="Extra environment variables.")
    env_from: list[EnvFromSource] | None = Field(
        default=None, description="Variables from ConfigMaps and Secrets."
    )
    resources: Resources | None = Field(default=None, description="CPU and memory.")
    service_account_name: Subdomain | None = Field(
        default=None, description="ServiceAccount of the pod."
    )
    labels: dict[String, String] | None = Field(default=None, description="Extra pod labels.")
    annotations: dict[String, String] | None = Field(
        default=None, description="Extra pod annotations."
    )
    priority_class_name: Subdomain | None = Field(
        default=None, description="PriorityClass of the pod."
    )


class GPUPoolSpec(SpecModel):
    """The pool's GPUs, its worker pod and its scaling bounds."""

    gpu_type: GpuType = Field(description="GPU type of the pool, matched by a job's gpuClass.")
    vram_gib: StrictFloat = Field(
        ge=1.0, le=1024.0, alias="vramGiB", description="GPU memory of one worker, in GiB."
    )
    gpus_per_worker: StrictInt = Field(
        default=1, ge=1, le=16, description="GPUs each worker pod requests."
    )
    min_replicas: StrictInt = Field(default=0, ge=0, le=1000, description="Fewest workers.")
    max_replicas: StrictInt = Field(ge=0, le=1000, description="Most workers.")
    target_jobs_per_worker: StrictInt = Field(
        default=1, ge=1, le=1000, description="Queued and running jobs each worker should carry."
    )
    scale_down_delay_seconds: StrictInt = Field(
        default=60, ge=0, le=86400, description="How long a worker stays idle before removal."
    )
    drain_seconds: StrictInt = Field(
        default=600, ge=0, le=86400, description="How long a removed worker may finish its jobs."
    )
    tiers: list[Tier] = Field(
        default_factory=list, max_length=4, description="Tiers that may use the pool."
    )
    node_selector: dict[String, String] | None = Field(
        default=None, description="Labels of the nodes the workers run on."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, description="Taints the workers tolerate."
    )
    template: WorkerTemplate = Field(
        default_factory=WorkerTemplate, description="What is merged into each worker pod."
    )

    @field_validator("gpu_type")
    @classmethod
    def check_gpu_type(cls, value: str) -> str:
        if value == ANY_GPU_CLASS:
            raise ValueError(ANY_GPU_TYPE_RULE)
        return value

    @model_validator(mode="after")
    def check_rules(self) -> Self:
        """The CRD's cross-field CEL rules, with the same messages."""
        for rule in gpu_pool_rule_violations(self):
            raise ValueError(rule)
        return self

    def effective_node_selector(self, pool: str) -> dict[str, str]:
        """The worker pods' nodeSelector: spec.nodeSelector, or when empty the pool's
        nodes (`NODE_POOL_LABEL: pool`), a default the CRD cannot say for it depends
        on the name."""
        return dict(self.node_selector) if self.node_selector else {NODE_POOL_LABEL: pool}

    def effective_tolerations(self) -> list[Toleration]:
        """The worker pods' tolerations: spec.tolerations, or when empty the GPU taint."""
        return list(self.tolerations) if self.tolerations else [GPU_TOLERATION]

    def allows(self, tier: Tier) -> bool:
        """Whether jobs of `tier` may use the pool (no tiers: every tier)."""
        return not self.tiers or tier in self.tiers


def gpu_pool_rule_violations(spec: GPUPoolSpec) -> list[str]:
    """Messages of the cross-field rules `spec` breaks (the CRD's CEL rules)."""
    if spec.max_replicas < spec.min_replicas:
        return [MAX_REPLICAS_RULE]
    return []


class GPUPoolStatus(StatusModel):
    replicas: int = Field(default=0, ge=0)
    ready_replicas: int = Field(default=0, ge=0)
    busy_replicas: int = Field(default=0, ge=0)
    desired_replicas: int = Field(default=0, ge=0)
    queued_jobs: int = Field(default=0, ge=0)
    last_scale_time: datetime | None = None
    conditions: list[Condition] | None = None
    observed_generation: int | None = Field(default=None, ge=0)
