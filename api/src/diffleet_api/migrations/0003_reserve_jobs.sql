-- A job the API created but never reserved credits for (its replica died, or gave up,
-- between the two) is 'abandoned' by the job watcher once it is old enough, and deleted:
-- no client was told of it, and nobody would pay for it. A reservation that comes later
-- finds the row abandoned and fails, rather than charging for a deleted job.
alter table jobs drop constraint jobs_credits_check,
    add constraint jobs_credits_check
    check (credits in ('none', 'reserved', 'settled', 'refunded', 'abandoned'));

-- Reserving the credits of jobs just created, and taking their tokens of the tenant's
-- `bucket_name` bucket (one per job; a null capacity takes none): one call, so one
-- transaction and one round trip, all or nothing.
--   1. The balance is reduced only when it covers the total; when it does not, nothing
--      is written.
--   2. The tokens are taken (take_tokens); when refused, the debit is undone (in the
--      same transaction, under the row lock it took: nobody saw it).
--   3. Each job's history row and, from it, its `reserve` ledger row are written. The
--      watcher may have recorded the job first: its row then takes the reservation,
--      unless the watcher has abandoned the job meanwhile; then the call fails (SQLSTATE
--      DF409) and nothing is written.
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
    written integer;
begin
    update tenants set balance = tenants.balance - total
    where tenants.id = tenant and tenants.balance >= total
    returning tenants.balance into debited;
    if not found then
        return query select 'short', (select tenants.balance from tenants where tenants.id = tenant);
        return;
    end if;
    if capacity is not null
        and take_tokens(tenant, bucket_name, capacity, rate, jsonb_array_length(jobs)) is null
    then
        update tenants set balance = tenants.balance + total where tenants.id = tenant;
        return query select 'rate_limited', null::numeric;
        return;
    end if;
    with recorded as (
        insert into jobs as history
            (uid, tenant_id, namespace, name, spec, cost, credits, created_at)
        select job.uid, tenant, job.namespace, job.name, job.spec, job.cost, 'reserved',
            job.created_at
        from jsonb_to_recordset(jobs)
            as job (uid text, namespace text, name text, spec jsonb, cost numeric,
                created_at timestamptz)
        on conflict (uid) do update set tenant_id = excluded.tenant_id, cost = excluded.cost,
            credits = 'reserved'
        where history.credits = 'none'
        returning history.uid, history.name, history.cost
    )
    insert into ledger (tenant_id, kind, amount, job_uid, note)
    select tenant, 'reserve', -recorded.cost, recorded.uid, 'job ' || recorded.name
    from recorded;
    get diagnostics written = row_count;
    if written < jsonb_array_length(jobs) then
        raise exception 'the job watcher abandoned these jobs before their reservation'
            using errcode = 'DF409';
    end if;
    return query select 'reserved', debited;
end;
$$;
