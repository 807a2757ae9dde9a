-- Taking rate-limit tokens, in one place for every statement that takes some: refill the
-- tenant's bucket (what it held plus capacity/window per second since it was written,
-- capped at capacity; a new bucket starts full), then take `cost` tokens only when that
-- many are there. The upsert holds the bucket's row lock for the calling statement
-- alone. Returns the tokens left, or null when refused (the bucket is then unchanged).
create function take_tokens(
    tenant text, bucket_name text, capacity double precision, rate double precision,
    cost double precision
) returns double precision
language sql volatile
as $$
    insert into rate_buckets as bucket (tenant_id, name, tokens, updated_at)
    select tenant, bucket_name, capacity - cost, clock_timestamp() where cost <= capacity
    on conflict (tenant_id, name) do update
    set tokens = least(capacity, bucket.tokens
            + rate * greatest(0, extract(epoch from clock_timestamp() - bucket.updated_at)))
            - cost,
        updated_at = clock_timestamp()
    where least(capacity, bucket.tokens
            + rate * greatest(0, extract(epoch from clock_timestamp() - bucket.updated_at)))
            >= cost
    returning tokens
$$;
