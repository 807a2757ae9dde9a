"""Settings shared by every component, read from the environment.

`make env` prints the variables that point a shell at the local stack; in a cluster
the Helm chart sets the same variables. S3 is reached through the standard AWS
variables (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...), which boto3 reads itself.
"""

from functools import lru_cache

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from diffleet_core import SYSTEM_NAMESPACE
from diffleet_core.queues import Topology
from diffleet_core.resources.generation_job import Tier
from diffleet_core.resources.model_cache import Pool


def every_pool_for_every_tier() -> dict[Tier, list[Pool]]:
    return {tier: list(Pool) for tier in Tier}


class Buckets(BaseModel):
    """The three S3 buckets of a diffleet installation."""

    models: str = "diffleet-models"
    outputs: str = "diffleet-outputs"
    uploads: str = "diffleet-uploads"


class Settings(BaseSettings):
    """Connection settings of the platform's backing services."""

    model_config = SettingsConfigDict(env_prefix="DIFFLEET_", env_nested_delimiter="__")

    amqp_url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/",
        description="RabbitMQ URL, vhost included (DIFFLEET_AMQP_URL)",
    )
    database_url: str = Field(
        default="postgresql://diffleet@127.0.0.1:5432/diffleet",
        description="PostgreSQL DSN of the API's database (DIFFLEET_DATABASE_URL)",
    )
    system_namespace: str = SYSTEM_NAMESPACE
    buckets: Buckets = Buckets()
    queue_prefix: str = Field(
        default="diffleet",
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="Prefix of every queue and exchange name (DIFFLEET_QUEUE_PREFIX)",
    )
    tier_pools: dict[Tier, list[Pool]] = Field(
        default_factory=every_pool_for_every_tier,
        description="Which GPU pools each tier may use (DIFFLEET_TIER_POOLS, JSON)",
    )

    @property
    def topology(self) -> Topology:
        return Topology(prefix=self.queue_prefix)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
