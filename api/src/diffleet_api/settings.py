"""Settings of the API process, from DIFFLEET_API_* environment variables.

The platform-wide settings (database, broker, buckets) are core's `Settings`; this is
what only the API needs: auth, the tier table of rate limits, credits, uploads, webhooks.
"""

from decimal import Decimal
from functools import cached_property, lru_cache

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from diffleet_core.resources.generation_job import MAX_PROMPT_LENGTH, Tier
from diffleet_core.settings import (
    DEVELOPMENT_JWT_SECRET,
    DEVELOPMENT_WEBHOOK_SECRET,
    check_credential,
)

JWT_AUDIENCE = "diffleet-api"
LARGEST_IMAGE_PIXELS = 2048 * 2048
"""The largest job's size: a worker resizes an input image to the job's size, so a larger
upload would only cost the API (and the worker) its decoding."""


class TierLimits(BaseModel):
    """Limits of one tier. A rate of None means unlimited; the sizes and the streams are
    bounded in every tier (a field left out takes the default here)."""

    requests_per_minute: int | None = Field(default=None, ge=1)
    generations_per_hour: int | None = Field(default=None, ge=1)
    uploads_per_hour: int | None = Field(default=None, ge=1)
    upload_max_pixels: int = Field(
        default=LARGEST_IMAGE_PIXELS,
        ge=64 * 64,
        description="Pixels of an uploaded image, read from its header before decoding",
    )
    prompt_max_length: int = Field(
        default=MAX_PROMPT_LENGTH,
        ge=1,
        le=MAX_PROMPT_LENGTH,
        description="Characters of `prompt` and `negativePrompt` (at most the CRD's limit)",
    )
    event_streams: int = Field(
        default=100, ge=1, description="Concurrent event streams (SSE) per API process"
    )
    concurrent_trainings: int = Field(
        default=0, ge=0, description="Unfinished TrainingJobs at once (0: no trainings)"
    )


def default_tier_limits() -> dict[Tier, TierLimits]:
    """The platform's tier table."""
    return {
        Tier.FREE: TierLimits(
            requests_per_minute=100,
            generations_per_hour=10,
            uploads_per_hour=20,
            upload_max_pixels=1024 * 1024,
            prompt_max_length=500,
            event_streams=2,
        ),
        Tier.STANDARD: TierLimits(
            requests_per_minute=200,
            generations_per_hour=50,
            uploads_per_hour=50,
            prompt_max_length=1000,
            event_streams=5,
            concurrent_trainings=1,
        ),
        Tier.PRO: TierLimits(
            requests_per_minute=500,
            generations_per_hour=200,
            uploads_per_hour=100,
            event_streams=20,
            concurrent_trainings=2,
        ),
        Tier.ENTERPRISE: TierLimits(
            requests_per_minute=2000, generations_per_hour=1000, concurrent_trainings=4
        ),
    }


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIFFLEET_API_", env_nested_delimiter="__")

    host: str = Field(default="127.0.0.1", description="Address to listen on")
    port: int = Field(default=8080, ge=1, le=65535)
    jwt_secret: str = Field(
        default=DEVELOPMENT_JWT_SECRET,
        description="HS256 key of bearer JWTs; empty: HS256 off, allowed only with"
        " DIFFLEET_API_JWT_PUBLIC_KEY (with neither, every JWT is refused)",
    )
    jwt_public_key: str = Field(default="", description="PEM RS256 public key; empty: RS256 off")
    jwt_issuer: str = Field(default="https://diffleet.local", description="Required `iss` claim")
    jwt_leeway_seconds: float = Field(default=5.0, ge=0)
    webhook_secret: str = Field(
        default=DEVELOPMENT_WEBHOOK_SECRET, description="HMAC-SHA256 key of webhook bodies"
    )
    tier_limits: dict[Tier, TierLimits] = Field(
        default_factory=default_tier_limits, description="Limits per tier (JSON)"
    )
    starting_credits: float = Field(default=100.0, ge=0, description="Balance of a new tenant")
    page_size: int = Field(default=50, ge=1, le=500)
    presign_seconds: int = Field(default=300, ge=10, le=3600, description="Output URL lifetime")
    upload_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    model_upload_max_bytes: int = Field(default=8 * 1024**3, ge=1024)
    dataset_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="A dataset upload's body, and the uncompressed size of its files in all",
    )
    training_step_price: Decimal = Field(
        default=Decimal("0.02"),
        ge=0,
        description="Credits of one training step of one 512x512 image"
        " (diffleet_core.pricing.training_cost)",
    )
    request_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Kubernetes, S3, AMQP, waiting for a PostgreSQL connection"
    )
    migrate_on_start: bool = Field(default=True, description="Apply migrations at startup")
    startup_patience_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How long a starting API waits for PostgreSQL and RabbitMQ to come back"
        " (jittered backoff) before it gives up",
    )
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=20, ge=1)
    kube_connections: int = Field(default=64, ge=1, description="Kubernetes client pool size")
    model_cache_seconds: float = Field(
        default=10.0, ge=0, description="How long a ModelCache's type and base model are remembered"
    )
    watcher: bool = Field(default=True, description="Run the job watcher (one replica leads)")
    watcher_lock: str = Field(
        default="diffleet-api-watcher", description="Name of the leader advisory lock"
    )
    watch_namespaces: list[str] = Field(
        default_factory=list, description="Namespaces the watcher follows (JSON); empty: all"
    )
    abandon_unreserved_after_seconds: float = Field(
        default=120.0,
        gt=0,
        description="The job watcher deletes a job the API created but never reserved"
        " credits for (its replica died between the two) once it is this old",
    )
    webhook_allow_private_targets: bool = Field(
        default=False,
        description="Deliver webhooks to loopback, private and link-local addresses"
        " (local development and tests only)",
    )
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=6, ge=1)
    webhook_backoff_seconds: float = Field(default=1.0, gt=0, description="First retry delay")
    webhook_backoff_max_seconds: float = Field(default=300.0, gt=0)
    sse_keepalive_seconds: float = Field(default=15.0, gt=0)
    door_wait_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How long a compatible door's request (OpenAI, Automatic1111) waits for"
        " its job to finish; past it, a 504 that names the job (follow it at /v1/jobs)",
    )
    door_default_model: str = Field(
        default="",
        max_length=253,
        description="The checkpoint ModelCache a door's request runs when it names none, or"
        " names one of OpenAI's models (dall-e-*, gpt-image-*); empty: such a request is"
        " refused, naming `model`",
    )
    openai_quality_steps: dict[str, int] = Field(
        default_factory=lambda: {
            "low": 15,
            "medium": 25,
            "standard": 25,
            "auto": 25,
            "high": 40,
            "hd": 40,
        },
        description="Denoising steps of each OpenAI `quality` (JSON)",
    )
    openai_style_presets: dict[str, str] = Field(
        default_factory=lambda: {"vivid": "cinematic", "natural": "photographic"},
        description="The StylePreset of each OpenAI `style` (JSON); any other value of"
        " `style` is taken as a StylePreset's name",
    )
    openai_variation_prompt: str = Field(
        default="a variation of the image",
        min_length=1,
        max_length=1000,
        description="The prompt of an OpenAI variation (an img2img job of the image; an"
        " img2img job needs a prompt, and a variation request has none)",
    )
    openai_variation_strength: float = Field(
        default=0.6, gt=0, le=1, description="The denoising strength of an OpenAI variation"
    )

    @cached_property
    def request_capacities(self) -> dict[str, int]:
        """Requests per minute by tier name, for the tiers that have a limit (what the
        authenticating statement takes a token against)."""
        return {
            tier.value: limits.requests_per_minute
            for tier, limits in self.tier_limits.items()
            if limits.requests_per_minute is not None
        }

    @field_validator("tier_limits", mode="after")
    @classmethod
    def every_tier(cls, limits: dict[Tier, TierLimits]) -> dict[Tier, TierLimits]:
        """Tiers left out of a configured table keep the platform's limits."""
        return default_tier_limits() | limits

    def check_credentials(self, development_mode: bool) -> None:
        """Refuses the API's own secrets by core's rule (InsecureCredentialError). The JWT
        secret may be empty (HS256 off) only where RS256 has a public key."""
        if self.jwt_secret or not self.jwt_public_key:
            check_credential(
                "DIFFLEET_API_JWT_SECRET", self.jwt_secret, development_mode=development_mode
            )
        check_credential(
            "DIFFLEET_API_WEBHOOK_SECRET", self.webhook_secret, development_mode=development_mode
        )


@lru_cache
def get_api_settings() -> ApiSettings:
    return ApiSettings()
