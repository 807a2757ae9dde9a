"""Conventions shared by every resource model: camelCase on the wire, snake_case in Python."""

from typing import Any

from pydantic import BaseModel, ConfigDict, WrapValidator
from pydantic.alias_generators import to_camel


class SpecModel(BaseModel):
    """A spec (or part of one): unknown fields are refused, as the CRD refuses them.
    Numbers and booleans are strict where the CRD is: "512" is not an integer, nor true."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class StatusModel(BaseModel):
    """A status (or part of one): fields written by a newer operator are kept, not refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


def wire_only(model: type[SpecModel]) -> WrapValidator:
    """Validates `model` as a client sends it: by camelCase names only, at every level, so
    that a snake_case name is an unknown field, as it is for the CRD. (Python code may
    still build the models by their snake_case names.)"""

    def by_alias(value: Any, _: Any) -> SpecModel:
        return model.model_validate(value, by_name=False)

    return WrapValidator(by_alias)
