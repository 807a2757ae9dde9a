-- Tenants, their keys, the credit ledger, rate-limit buckets, idempotency keys, job
-- history and webhook deliveries.

create table tenants (
    id          text primary key,
    namespace   text not null unique,
    tier        text not null,
    balance     numeric(14, 2) not null default 0,
    created_at  timestamptz not null default now()
);

create table api_keys (
    id          bigserial primary key,
    tenant_id   text not null references tenants (id) on delete cascade,
    name        text not null,
    role        text not null,
    prefix      text not null,
    hash        bytea not null unique,
    created_at  timestamptz not null default now(),
    revoked_at  timestamptz
);

-- Every change of a tenant's balance, so that balance = sum(amount) at all times.
create table ledger (
    id          bigserial primary key,
    tenant_id   text not null references tenants (id) on delete cascade,
    kind        text not null check (kind in ('topup', 'reserve', 'settle', 'refund')),
    amount      numeric(14, 2) not null,
    job_uid     text,
    note        text not null default '',
    created_at  timestamptz not null default now()
);
create unique index ledger_one_entry_per_job_and_kind on ledger (job_uid, kind)
    where job_uid is not null;
create index ledger_by_tenant on ledger (tenant_id, id);

create table rate_buckets (
    tenant_id   text not null references tenants (id) on delete cascade,
    name        text not null,
    tokens      double precision not null,
    updated_at  timestamptz not null,
    primary key (tenant_id, name)
);

create table idempotency_keys (
    tenant_id    text not null references tenants (id) on delete cascade,
    key          text not null,
    request_hash text not null,
    job_names    jsonb not null,
    created_at   timestamptz not null default now(),
    primary key (tenant_id, key)
);

-- History: every job seen, from the API or from kubectl; it outlives the resource.
create table jobs (
    uid          text primary key,
    tenant_id    text references tenants (id) on delete set null,
    namespace    text not null,
    name         text not null,
    spec         jsonb not null,
    status       jsonb not null default '{}',
    phase        text,
    cost         numeric(14, 2),
    credits      text not null default 'none'
                 check (credits in ('none', 'reserved', 'settled', 'refunded')),
    created_at   timestamptz not null,
    finished_at  timestamptz
);
create index jobs_by_namespace_name on jobs (namespace, name, created_at desc);

create table webhook_deliveries (
    id              bigserial primary key,
    job_uid         text not null unique,
    url             text not null,
    payload         jsonb not null,
    state           text not null default 'pending'
                    check (state in ('pending', 'delivered', 'failed')),
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz not null default now()
);
create index webhook_deliveries_due on webhook_deliveries (next_attempt_at)
    where state = 'pending';

create table models (
    namespace   text not null,
    name        text not null,
    digest      text not null,
    source      text not null,
    created_at  timestamptz not null default now(),
    primary key (namespace, name)
);
create unique index models_one_per_digest on models (namespace, digest);
