-- The tokens a tenant's bucket holds now (refilled, capped at capacity), without taking
-- any; a bucket never written is full. Authentication reads the generations bucket with
-- it, so a submission refused for its rate limit is refused before anything is created.
create function tokens_left(
    tenant text, bucket_name text, capacity double precision, rate double precision
) returns double precision
language sql volatile
as $$
    select coalesce(
        (select least(capacity, bucket.tokens
                + rate * greatest(0, extract(epoch from clock_timestamp() - bucket.updated_at)))
            from rate_buckets bucket
            where bucket.tenant_id = tenant and bucket.name = bucket_name),
        capacity)
$$;

-- Reserving the credits of jobs just created, and taking their tokens of the tenant's
-- `bucket_name` bucket (one per job; a null capacity takes none): one call, so one
-- transaction and one round trip, all or nothing.
--   1. The tokens are taken (take_tokens); when refused, nothing is written.
--   2. The balance is reduced only when it covers the total. When it does not, the
--      block's subtransaction is rolled back, giving the tokens back.
--   3. Each job's `reserve` ledger row and history row are written (the watcher may have
--      recorded the job first: its row then takes the reservation).
-- Row locks are held for the calling statement alone, so a tenant's concurrent
-- submissions never spend the same credits or tokens twice.
-- Returns one row: outcome 'reserved' (balance_left: after the debit), 'short'
-- (balance_left: the balance as it is) or 'rate_limited' (balance_left: null).
create function reserve_jobs(
    tenant text, total numeric, jobs jsonb,
    bucket_name text, capacity double precision, rate double precision
) returns table (outcome text, balance_left numeric)
language plpgsql volatile
as $$
declare
    debited numeric;
begin
    begin
        if capacity is not null
            and take_tokens(tenant, bucket_name, capacity, rate, jsonb_array_length(jobs)) is null
        then
            return query select 'rate_limited', null::numeric;
            return;
        end if;
        update tenants set balance = tenants.balance - total
        where tenants.id = tenant and tenants.balance >= total
        returning tenants.balance into debited;
        if not found then
            raise exception 'balance short' using errcode = 'DF402';
        end if;
    exception when sqlstate 'DF402' then
        return query select 'short', (select tenants.balance from tenants where tenants.id = tenant);
        return;
    end;
    insert into ledger (tenant_id, kind, amount, job_uid, note)
    select tenant, 'reserve', -job.cost, job.uid, 'job ' || job.name
    from jsonb_to_recordset(jobs) as job (uid text, name text, cost numeric);
    insert into jobs as history (uid, tenant_id, namespace, name, spec, cost, credits, created_at)
    select job.uid, tenant, job.namespace, job.name, job.spec, job.cost, 'reserved', job.created_at
    from jsonb_to_recordset(jobs)
        as job (uid text, namespace text, name text, spec jsonb, cost numeric,
            created_at timestamptz)
    on conflict (uid) do update set tenant_id = excluded.tenant_id, cost = excluded.cost,
        credits = 'reserved';
    return query select 'reserved', debited;
end;
$$;
