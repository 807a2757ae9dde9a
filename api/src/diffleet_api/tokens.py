"""Bearer JWTs: HS256 with the configured secret or RS256 with the configured public key.
Signature, `exp`, `iss` and `aud` (diffleet-api) are checked; `sub`, `tenant` and `role`
are required."""

from dataclasses import dataclass
from enum import StrEnum

import jwt

from diffleet_api.settings import JWT_AUDIENCE, ApiSettings


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


def verification_keys(settings: ApiSettings) -> dict[str, str]:
    keys = {}
    if settings.jwt_secret:
        keys["HS256"] = settings.jwt_secret
    if settings.jwt_public_key:
        keys["RS256"] = settings.jwt_public_key
    return keys


def decode(token: str, settings: ApiSettings) -> Claims:
    keys = verification_keys(settings)
    try:
        algorithm = jwt.get_unverified_header(token).get("alg", "")
    except jwt.PyJWTError as error:
        raise InvalidTokenError(f"malformed token: {error}") from error
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
        return Claims(
            subject=str(payload["sub"]), tenant=str(payload["tenant"]), role=Role(payload["role"])
        )
    except (KeyError, ValueError) as error:
        raise InvalidTokenError(
            "claims `tenant` and `role` (admin|member|viewer) are required"
        ) from error
