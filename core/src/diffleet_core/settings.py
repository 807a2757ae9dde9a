"""Settings shared by every component, read from the environment.

`make env` prints the variables that point a shell at the local stack; in a cluster
the Helm chart sets the same variables. S3 is reached through the standard AWS
variables (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...), which boto3 reads itself.
"""

from functools import lru_cache

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from diffleet_core import SYSTEM_NAMESPACE


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


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
