-- Keys of the platform role: they read the fleet (GET /v1/fleet) and speak for no
-- tenant, so they live apart from tenants' api_keys; only diffleet-admin creates them.
create table platform_keys (
    id          bigserial primary key,
    name        text not null,
    prefix      text not null,
    hash        bytea not null unique,
    created_at  timestamptz not null default now(),
    revoked_at  timestamptz
);
