"""Conventions shared by every resource model: camelCase on the wire, snake_case in Python."""

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class SpecModel(BaseModel):
    """A spec (or part of one): unknown fields are refused, as the CRD refuses them."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class StatusModel(BaseModel):
    """A status (or part of one): fields written by a newer operator are kept, not refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")
