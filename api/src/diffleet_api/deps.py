"""Dependencies of the routes, as `Annotated` aliases: the runtime, the caller's identity
(API key or JWT, then the tenant's request rate limit), and the role a route needs."""

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from diffleet_api import ratelimits, tenants, tokens
from diffleet_api.buckets import granted
from diffleet_api.errors import ForbiddenError, UnauthenticatedError
from diffleet_api.keys import looks_like_key
from diffleet_api.runtime import Runtime
from diffleet_api.tenants import Tenant
from diffleet_api.tokens import Role

RATE_HEADERS = "rate_limit_headers"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="diffleet"'}
# RFC 6750's b64token, which API keys (base32) and JWTs (base64url) both are.
BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MAX_TOKEN_LENGTH = 8192

bearer = HTTPBearer(
    auto_error=False,
    description="An API key (dfl_...) or a JWT (aud diffleet-api), as a Bearer token",
)


async def get_runtime(request: Request) -> Runtime:
    """Async, as every dependency here: FastAPI runs a plain `def` in a worker thread."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    subject: str
    tenant: Tenant
    role: Role
    balance: Decimal
    """The tenant's credits as the caller was authenticated (read with the credential, no
    round trip of its own): submissions check it before creating anything; the
    reservation itself decides."""
    generations_left: float | None
    """The tokens of the tenant's generations bucket, read likewise (None: no limit)."""


def refused(detail: str) -> UnauthenticatedError:
    error = (
        f'Bearer realm="diffleet", error="invalid_token", error_description="{header_safe(detail)}"'
    )
    return UnauthenticatedError(detail, headers={"WWW-Authenticate": error})


def header_safe(text: str) -> str:
    """`text` with what RFC 6750 does not allow in an error_description (quotes, backslashes,
    controls, non-ASCII: parts of a token may be echoed) replaced by "?"."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)[:200]


async def authenticate(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller, from an API key or a JWT; takes a token of the tenant's requests bucket
    in the same statement (429 when it is empty)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise UnauthenticatedError("an Authorization: Bearer token is required", headers=CHALLENGE)
    token = credentials.credentials
    if len(token) > MAX_TOKEN_LENGTH or not BEARER_TOKEN.fullmatch(token):
        raise refused("the Bearer token holds characters (or a length) no token has")
    capacities = runtime.settings.request_capacities
    async with runtime.pool.connection() as connection:
        if looks_like_key(token):
            grant = await tenants.authenticate_key(connection, token, capacities)
            if grant is None:
                raise refused("unknown or revoked API key")
            caller, subject, role = grant.caller, f"key:{grant.key_id}", grant.role
        else:
            try:
                claims = tokens.decode(token, runtime.settings)
            except tokens.InvalidTokenError as error:
                raise refused(str(error)) from error
            found = await tenants.authenticate_tenant(connection, claims.tenant, capacities)
            if found is None:
                raise refused(f"unknown tenant {claims.tenant!r}")
            caller, subject, role = found, claims.subject, claims.role
        tenant = caller.tenant
        limits = runtime.settings.tier_limits[tenant.tier]
        rule = ratelimits.policy(limits, ratelimits.REQUESTS)
        if rule is not None:
            if caller.requests_left is None:
                decision = await ratelimits.refused(connection, tenant.id, rule, 1)
                raise ratelimits.refusal(rule, decision)
            decision = granted(rule, caller.requests_left)
            request.state.rate_limit_headers = ratelimits.headers(rule, decision)
    generations = ratelimits.policy(limits, ratelimits.GENERATIONS)
    left = None if generations is None else ratelimits.available(generations, caller.generations)
    return Principal(subject, tenant, role, caller.balance, left)


def require(role: Role) -> object:
    async def allowed(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.role.allows(role):
            raise ForbiddenError(
                f"role {principal.role.value!r} may not do this; {role.value!r} may"
            )
        return principal

    return Depends(allowed)


Viewer = Annotated[Principal, require(Role.VIEWER)]
Member = Annotated[Principal, require(Role.MEMBER)]
Admin = Annotated[Principal, require(Role.ADMIN)]
