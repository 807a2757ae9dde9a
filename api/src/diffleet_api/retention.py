"""`diffleet-admin purge-tenant`: deletes what a tenant's namespace stored, every object
under its prefix (diffleet_core.storage.tenant_prefix) of the outputs and uploads
buckets, and on request its job history. Output retention for a self-hosted S3 (on AWS,
Terraform's lifecycle rule expires outputs). A run that fails midway is finished by the
next: each removes what is left, and a second removes nothing."""

from dataclasses import dataclass
from typing import Any

import psycopg

from diffleet_core.settings import Buckets
from diffleet_core.storage import tenant_prefix

# The most keys one S3 DeleteObjects call takes; a listing page holds at most as many.
DELETE_BATCH = 1000


class PurgeError(Exception):
    """S3 refused to delete some objects."""


@dataclass(frozen=True)
class History:
    jobs: int
    webhook_deliveries: int


def purge_objects(s3: Any, bucket: str, namespace: str) -> int:
    """Deletes every object under the tenant's prefix of `bucket`; how many."""
    return delete_prefix(s3, bucket, tenant_prefix(namespace))


def delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    """Deletes every object under `prefix` of `bucket`, a page at a time; how many.
    Raises PurgeError naming what S3 refused to delete."""
    removed = 0
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": DELETE_BATCH}
    )
    for page in pages:
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if not keys:
            continue
        response = s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        if errors := response.get("Errors"):
            first = errors[0]
            raise PurgeError(
                f"s3://{bucket}: {len(errors)} of {len(keys)} objects not deleted"
                f" (first: {first.get('Key')}: {first.get('Code')} {first.get('Message')})"
            )
        removed += len(keys)
    return removed


def purge_tenant_objects(s3: Any, buckets: Buckets, namespace: str) -> dict[str, int]:
    """Deletes the tenant's outputs and uploads; objects removed, by bucket."""
    tenant_buckets = (buckets.outputs, buckets.uploads)
    return {bucket: purge_objects(s3, bucket, namespace) for bucket in tenant_buckets}


def purge_history(connection: psycopg.Connection[Any], namespace: str) -> History:
    """Deletes the namespace's job history rows and their webhook deliveries, in one
    transaction (the ledger's entries stay: they are the tenant's account)."""
    with connection.transaction():
        deliveries = connection.execute(
            "delete from webhook_deliveries"
            " where job_uid in (select uid from jobs where namespace = %s)",
            (namespace,),
        ).rowcount
        jobs = connection.execute("delete from jobs where namespace = %s", (namespace,)).rowcount
    return History(jobs=jobs, webhook_deliveries=deliveries)
