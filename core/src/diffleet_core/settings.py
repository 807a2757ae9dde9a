"""Settings shared by every component, read from the environment.

`make env` prints the variables that point a shell at the local stack; a deployment
sets the same variables. S3 is reached through the standard AWS variables
(AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...), which boto3 reads itself.

Secrets fail closed: outside development mode (DIFFLEET_DEVELOPMENT_MODE=true, which only
`make env` sets) a process refuses to start when a credential it holds is unset or one of
the development values committed to this repository (`check_credential`).
"""

import logging
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from typing import TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from diffleet_core import SYSTEM_NAMESPACE
from diffleet_core.queues import Topology

logger = logging.getLogger(__name__)

DEVELOPMENT_MODE = "DIFFLEET_DEVELOPMENT_MODE"
DEVELOPMENT_JWT_SECRET = "diffleet-local-development-secret-change-me"  # noqa: S105 - public
DEVELOPMENT_WEBHOOK_SECRET = "diffleet-local-webhook-secret"  # noqa: S105 - public
# Every credential committed to this repository: the defaults here and in the API's
# settings, and the local stack's (hack/stack.env). Being public, none is a secret.
DEVELOPMENT_CREDENTIALS = frozenset(
    {
        "guest",  # RabbitMQ's default user and password (the default DIFFLEET_AMQP_URL)
        "diffleet",  # the local stack's user names and MinIO access key
        "diffleet-local",  # the local stack's RabbitMQ and PostgreSQL password
        "diffleet-local-secret",  # the local stack's MinIO secret key
        DEVELOPMENT_JWT_SECRET,
        DEVELOPMENT_WEBHOOK_SECRET,
    }
)


class InsecureCredentialError(ValueError):
    """A credential that must not be used outside development mode; names its variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(
            f"{variable} {problem}: set it to a secret of this deployment"
            f" ({DEVELOPMENT_MODE}=true accepts it, on a development machine only)"
        )
        self.variable = variable


def check_credential(variable: str, value: str, *, development_mode: bool) -> None:
    """The rule for every secret: outside development mode, an empty one or one committed
    to this repository is refused (InsecureCredentialError naming `variable`)."""
    if development_mode:
        return
    if not value:
        raise InsecureCredentialError(variable, "is not set")
    if value in DEVELOPMENT_CREDENTIALS:
        raise InsecureCredentialError(variable, "holds a development credential (public)")


def url_password(url: str) -> str:
    """The password of a URL such as DIFFLEET_AMQP_URL; empty when it has none."""
    return urlsplit(url).password or ""


class Credential(StrEnum):
    """A platform credential a process may hold, by the variable that sets it."""

    AMQP = "DIFFLEET_AMQP_URL"
    DATABASE = "DIFFLEET_DATABASE_URL"
    S3 = "AWS_SECRET_ACCESS_KEY"


class Buckets(BaseModel):
    """The three S3 buckets of a diffleet installation."""

    models: str = "diffleet-models"
    outputs: str = "diffleet-outputs"
    uploads: str = "diffleet-uploads"


class Settings(BaseSettings):
    """Connection settings of the platform's backing services."""

    model_config = SettingsConfigDict(env_prefix="DIFFLEET_", env_nested_delimiter="__")

    development_mode: bool = Field(
        default=False,
        description="Accept the development credentials committed to this repository: the"
        " local stack only, never a deployment (DIFFLEET_DEVELOPMENT_MODE)",
    )
    amqp_url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/",
        description="RabbitMQ URL, vhost and password included (DIFFLEET_AMQP_URL)",
        repr=False,  # it holds a password
    )
    database_url: str = Field(
        default="postgresql://diffleet@127.0.0.1:5432/diffleet",
        description="PostgreSQL URL of the API's database, password included"
        " (DIFFLEET_DATABASE_URL)",
        repr=False,  # it holds a password
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None,
        validation_alias="AWS_SECRET_ACCESS_KEY",
        description="Read here only to refuse a development key; boto3 reads it itself, and"
        " where it is unset finds credentials elsewhere (an IAM role) or fails",
    )
    system_namespace: str = SYSTEM_NAMESPACE
    buckets: Buckets = Buckets()
    queue_prefix: str = Field(
        default="diffleet",
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="Prefix of every queue and exchange name (DIFFLEET_QUEUE_PREFIX)",
    )

    @property
    def topology(self) -> Topology:
        return Topology(prefix=self.queue_prefix)

    def check_credentials(self, *held: Credential) -> None:
        """Refuses the credentials a process holds by `check_credential`'s rule; in
        development mode says in the log that they are accepted."""
        if self.development_mode:
            logger.warning(
                "development mode (%s=true): development credentials are accepted;"
                " never in a deployment",
                DEVELOPMENT_MODE,
            )
        for credential in held:
            value = self._secret(credential)
            if value is not None:
                check_credential(credential.value, value, development_mode=self.development_mode)

    def _secret(self, credential: Credential) -> str | None:
        """The secret part of a credential; None where boto3 finds it elsewhere."""
        match credential:
            case Credential.AMQP:
                return url_password(self.amqp_url)
            case Credential.DATABASE:
                return url_password(self.database_url)
            case Credential.S3:
                key = self.s3_secret_access_key
                return None if key is None else key.get_secret_value()


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def settings_from(model: type[SettingsT], env: Mapping[str, str]) -> SettingsT:
    """`model`'s settings from the variables of `env` instead of this process's environment:
    the local stack's pod runner hosts simulated worker pods, each with its own, in one
    process."""
    source = EnvSettingsSource(model)
    source.env_vars = {key.lower(): value for key, value in env.items()}
    return model.model_validate(source())


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
