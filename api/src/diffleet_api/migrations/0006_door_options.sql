-- The options a caller keeps through a compatible door: the Automatic1111 door's
-- POST /sdapi/v1/options sets the checkpoint the caller's requests run when they name
-- none. `caller` is doors.jobs.caller_label (a digest of the key's or the JWT's subject).
create table door_options (
    tenant_id   text not null references tenants (id) on delete cascade,
    door        text not null,
    caller      text not null,
    checkpoint  text not null,
    updated_at  timestamptz not null default now(),
    primary key (tenant_id, door, caller)
);
