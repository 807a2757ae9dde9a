"""Bearer JWTs: HS256 with the configured secret or RS256 with the configured public key.
Signature, `exp`, `iss` and `aud` (diffleet-api) are checked; `sub`, `tenant` and `role`
are required. A header or claim of the wrong JSON type, or a string holding a control
character, is an invalid token like any other: every failure is `InvalidTokenError`."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import jwt
from pydantic import BaseModel, Field, StrictFloat, ValidationError

from diffleet_api.settings import JWT_AUDIENCE, ApiSettings
from diffleet_core.resources.text import Text


class Role(StrEnum):
    """What a credential may do in its tenant: admin > member > viewer."""

    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"

    def allows(self, needed: "Role") -> bool:
        order = [Role.VIEWER, Role.MEMBER, Role.ADMIN]
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True)
class Claims:
    subject: str
    tenant: str
    role: Role


class InvalidTokenError(Exception):
    """The token is refused; the message says why (safe to show to the client)."""


class TokenClaims(BaseModel):
    """The claims read, once PyJWT has checked the signature and the registered claims:
    each of its JSON type (PyJWT would take an `exp` of "123"), strings without control
    characters, so that nothing after authentication meets a malformed one."""

    sub: Annotated[Text, Field(min_length=1, max_length=255)]
    tenant: Annotated[Text, Field(min_length=1, max_length=253)]
    role: Role
    exp: StrictFloat


def algorithm_of(token: str) -> str:
    """The header's `alg`, before any signature check; raises unless it is a string."""
    try:
        header: Any = jwt.get_unverified_header(token)
    except jwt.PyJWTError as error:
        raise InvalidTokenError(f"malformed token: {error}") from error
    algorithm = header.get("alg")
    if not isinstance(algorithm, str):
        raise InvalidTokenError("the header's `alg` must be a string")
    return algorithm


def verification_keys(settings: ApiSettings) -> dict[str, str]:
    keys = {}
    if settings.jwt_secret:
        keys["HS256"] = settings.jwt_secret
    if settings.jwt_public_key:
        keys["RS256"] = settings.jwt_public_key
    return keys


def decode(token: str, settings: ApiSettings) -> Claims:
    keys = verification_keys(settings)
    algorithm = algorithm_of(token)
    if algorithm not in keys:
        raise InvalidTokenError(f"algorithm {algorithm!r} is not accepted")
    try:
        payload = jwt.decode(
            token,
            keys[algorithm],
            algorithms=[algorithm],
            audience=JWT_AUDIENCE,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_seconds,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError as error:
        raise InvalidTokenError("token expired") from error
    except jwt.InvalidAudienceError as error:
        raise InvalidTokenError(f"audience must be {JWT_AUDIENCE!r}") from error
    except jwt.InvalidIssuerError as error:
        raise InvalidTokenError("issuer not accepted") from error
    except jwt.PyJWTError as error:
        raise InvalidTokenError(f"invalid token: {error}") from error
    try:
        claims = TokenClaims.model_validate(payload)
    except ValidationError as error:
        wrong = ", ".join(sorted({str(detail["loc"][0]) for detail in error.errors()}))
        raise InvalidTokenError(
            f"claims missing or of the wrong type: {wrong} (`sub` and `tenant` are strings,"
            " `role` is admin, member or viewer, `exp` a number)"
        ) from error
    return Claims(subject=claims.sub, tenant=claims.tenant, role=claims.role)
