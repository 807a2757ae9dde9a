"""Dependencies of the routes, as `Annotated` aliases: the runtime, the caller's identity
(API key or JWT, then the tenant's request rate limit), and the role a route needs."""

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)

from diffleet_api import platform_keys, ratelimits, tenants, tokens
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
basic = HTTPBasic(
    auto_error=False,
    description="An API key or a JWT as the password (any user name): the compatible doors",
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
    return await principal_of(request, runtime, credentials.credentials)


async def authenticate_basic_too(
    request: Request,
    runtime: RuntimeDep,
    bearer_credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    basic_credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
) -> Principal:
    """The caller, from a Bearer token or from the password of HTTP Basic auth (the user
    name is not read), as Automatic1111's `--api-auth` clients send a key."""
    if basic_credentials is not None:
        return await principal_of(request, runtime, basic_credentials.password)
    if bearer_credentials is not None and bearer_credentials.scheme.lower() == "bearer":
        return await principal_of(request, runtime, bearer_credentials.credentials)
    raise UnauthenticatedError(
        "an Authorization: Bearer token, or Basic auth with the key as password, is required",
        headers=CHALLENGE | {"WWW-Authenticate": 'Basic realm="diffleet"'},
    )


async def principal_of(request: Request, runtime: Runtime, token: str) -> Principal:
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


def require(
    role: Role, authenticator: Callable[..., Awaitable[Principal]] = authenticate
) -> object:
    async def allowed(principal: Annotated[Principal, Depends(authenticator)]) -> Principal:
        if not principal.role.allows(role):
            raise ForbiddenError(
                f"role {principal.role.value!r} may not do this; {role.value!r} may"
            )
        return principal

    return Depends(allowed)


@dataclass(frozen=True)
class PlatformCaller:
    """An operator of the platform (a platform key): speaks for no tenant."""

    subject: str


async def authenticate_platform(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> PlatformCaller:
    """A platform key's caller; any tenant's credential, an admin's included, is 403 (the
    platform role is granted only by `diffleet-admin platform-keys create`)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise UnauthenticatedError("an Authorization: Bearer token is required", headers=CHALLENGE)
    token = credentials.credentials
    if looks_like_key(token) and BEARER_TOKEN.fullmatch(token) and len(token) <= MAX_TOKEN_LENGTH:
        async with runtime.pool.connection() as connection:
            key_id = await platform_keys.authenticate(connection, token)
        if key_id is not None:
            return PlatformCaller(f"platform-key:{key_id}")
    principal = await principal_of(request, runtime, token)
    raise ForbiddenError(
        f"role {principal.role.value!r} may not do this; the platform role may (a key of"
        " `diffleet-admin platform-keys create`)"
    )


Platform = Annotated[PlatformCaller, Depends(authenticate_platform)]
Viewer = Annotated[Principal, require(Role.VIEWER)]
Member = Annotated[Principal, require(Role.MEMBER)]
Admin = Annotated[Principal, require(Role.ADMIN)]
# The compatible doors that accept Basic auth too (Automatic1111's).
BasicViewer = Annotated[Principal, require(Role.VIEWER, authenticate_basic_too)]
BasicMember = Annotated[Principal, require(Role.MEMBER, authenticate_basic_too)]
