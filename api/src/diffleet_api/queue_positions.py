"""Where queued jobs stand in their tier's queue: an estimate from the history the job
watcher keeps (what it last recorded of each job), not the broker's order. One query for
any number of jobs, so a page of a list costs what one job does."""

from datetime import UTC, datetime

from diffleet_api.runtime import Runtime
from diffleet_api.schemas import JobPublic
from diffleet_core.resources.generation_job import JobPhase

# For each job asked about: the jobs of its tier queued no later than it, itself aside.
AHEAD = """
with asked as (
    select * from unnest(%s::text[], %s::text[], %s::text[]) as a(uid, tier, queued_at)
), queued as (
    select uid, status->>'tier' as tier, status->>'queuedAt' as queued_at
    from jobs where phase = 'Queued'
)
select asked.uid, count(queued.uid) from asked
left join queued on queued.tier = asked.tier and queued.queued_at <= asked.queued_at
    and queued.uid <> asked.uid
group by asked.uid
"""
# Later than any queuedAt: a job whose status lacks one stands behind every queued job.
UNKNOWN_TIME = "9999"


def wire_time(moment: datetime | None) -> str:
    """`queuedAt` as the operator writes it (RFC 3339, seconds, Z), so that the history's
    strings compare in time order."""
    if moment is None:
        return UNKNOWN_TIME
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def queue_positions(runtime: Runtime, jobs: list[JobPublic]) -> dict[str, int]:
    """The position (1 = next) of each Queued job of `jobs`, by uid; others are absent."""
    queued = [job for job in jobs if job.status.phase == JobPhase.QUEUED]
    if not queued:
        return {}
    uids = [job.uid for job in queued]
    tiers = [job.status.tier.value if job.status.tier else None for job in queued]
    times = [wire_time(job.status.queued_at) for job in queued]
    async with runtime.pool.connection() as connection:
        cursor = await connection.execute(AHEAD, (uids, tiers, times))
        rows = await cursor.fetchall()
    return {uid: ahead + 1 for uid, ahead in rows}


async def with_queue_positions(runtime: Runtime, jobs: list[JobPublic]) -> list[JobPublic]:
    """`jobs`, each Queued one with its `queuePosition`."""
    positions = await queue_positions(runtime, jobs)
    return [job.model_copy(update={"queue_position": positions.get(job.uid)}) for job in jobs]
