"""The status writer's window and merge rules (diffleet_operator.status_writer): a job's
transitions within the window go in one write, a final phase writes at once, and no
patch that may not follow another merges with it."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_core.resources.generation_job import GenerationJobStatus, JobPhase, Tier
from diffleet_operator import status
from diffleet_operator.cache.jobs import JobCache
from diffleet_operator.status_writer import StatusWriter, ends_window, merge

WINDOW = 0.3
EMPTY = GenerationJobStatus()


def scheduled() -> dict[str, Any]:
    return status.scheduled(EMPTY, 1, pool="t4", node="n1", worker="w1")


def running(attempt: int = 1) -> dict[str, Any]:
    return status.running(status.now()) | {"worker": "w1", "attempts": attempt}


def succeeded() -> dict[str, Any]:
    return status.succeeded(
        EMPTY, 1, outputs=[], model_digest="sha256:m", lora_digests={}, total_steps=4
    )


def requeued(attempt: int) -> dict[str, Any]:
    return status.queued(
        EMPTY, 1, tier=Tier.FREE, queue="q", seed=7, attempt=attempt, reason="WorkerLost"
    )


def test_scheduled_running_and_succeeded_merge_into_one_patch() -> None:
    first = merge(scheduled(), running())
    assert first is not None
    merged = merge(first, succeeded())
    assert merged is not None
    assert merged["phase"] == "Succeeded"
    assert merged["worker"] == "w1"
    assert merged["attempts"] == 1
    assert merged["scheduledAt"]
    assert merged["startedAt"]
    assert merged["completedAt"]
    # Each patch computed its conditions from the stored status: both survive.
    assert [c["type"] for c in merged["conditions"]] == ["Scheduled", "Complete"]


@pytest.mark.parametrize(
    ("pending", "late"),
    [
        (succeeded(), running()),  # a redelivered "started" after "succeeded"
        (succeeded(), status.progress(2, 4)),  # a finished job keeps its final progress
        (running(), scheduled()),  # phases never move back
        (requeued(2), running(1)),  # a report about an older attempt
    ],
    ids=["started-after-succeeded", "progress-after-finished", "back", "older-attempt"],
)
def test_a_patch_that_may_not_follow_the_pending_one_does_not_merge(
    pending: dict[str, Any], late: dict[str, Any]
) -> None:
    assert merge(pending, late) is None


def test_a_requeue_follows_a_pending_running() -> None:
    merged = merge(running(1), requeued(2))
    assert merged is not None
    assert (merged["phase"], merged["attempts"], merged["worker"]) == ("Queued", 2, None)


def test_only_scheduled_running_and_progress_wait_out_the_window() -> None:
    assert not ends_window(scheduled())
    assert not ends_window(running())
    assert not ends_window(status.progress(1, 4))
    assert ends_window(succeeded())
    assert ends_window(requeued(2))
    cancelled = status.finished_unsuccessfully(
        EMPTY, 1, phase=JobPhase.CANCELLED, reason="Cancelled", message="cancelled"
    )
    assert ends_window(cancelled)


class FakeApi:
    """Records each write (when, which phase) and answers with `answer`."""

    def __init__(self, answer: Callable[[dict[str, Any]], Awaitable[bool]] | None = None):
        self.writes: list[tuple[float, dict[str, Any]]] = []
        self.answer = answer

    async def write(
        self, namespace: str, name: str, patch: dict[str, Any], known: Mapping[str, Any] | None
    ) -> bool:
        self.writes.append((time.monotonic(), patch))
        return await self.answer(patch) if self.answer else True


def run(scenario: Callable[[StatusWriter], Awaitable[Any]], api: FakeApi) -> Any:
    async def main() -> Any:
        return await scenario(StatusWriter(api.write, WINDOW, JobCache()))

    return asyncio.run(main())


def test_a_short_job_is_written_once_as_soon_as_it_succeeds() -> None:
    api = FakeApi()

    async def scenario(writer: StatusWriter) -> list[bool]:
        opened = time.monotonic()
        outcomes = [writer.submit("ns", "a", "uid-a", scheduled())]
        await asyncio.sleep(WINDOW / 6)
        outcomes.append(writer.submit("ns", "a", "uid-a", running()))
        await asyncio.sleep(WINDOW / 6)
        outcomes.append(writer.submit("ns", "a", "uid-a", succeeded()))
        written = list(await asyncio.gather(*outcomes))
        assert time.monotonic() - opened < WINDOW  # Succeeded did not wait the window out
        return written

    assert run(scenario, api) == [True, True, True]
    assert [patch["phase"] for _, patch in api.writes] == ["Succeeded"]


def test_a_longer_job_is_written_after_the_window_then_at_its_end() -> None:
    api = FakeApi()

    async def scenario(writer: StatusWriter) -> float:
        opened = time.monotonic()
        first = writer.submit("ns", "a", "uid-a", scheduled())
        second = writer.submit("ns", "a", "uid-a", running())
        assert await first
        assert await second
        await asyncio.sleep(WINDOW / 3)
        assert await writer.write("ns", "a", "uid-a", succeeded())
        return opened

    opened = run(scenario, api)
    assert [patch["phase"] for _, patch in api.writes] == ["Running", "Succeeded"]
    assert api.writes[0][0] - opened == pytest.approx(WINDOW, abs=0.1)
    # Scheduled's fields came with Running's write.
    assert api.writes[0][1]["scheduledAt"]


def test_jobs_are_written_apart_and_one_jobs_batches_in_order() -> None:
    async def scenario(writer: StatusWriter) -> None:
        gate = asyncio.Event()

        async def slow(patch: dict[str, Any]) -> bool:
            if patch["phase"] == "Running":
                await gate.wait()  # the first batch is still being written
            return True

        api.answer = slow
        first = writer.submit("ns", "a", "uid-a", running())
        other = writer.submit("ns", "b", "uid-b", succeeded())
        assert await other  # another job's write does not wait for this one's
        await asyncio.sleep(WINDOW * 1.2)  # uid-a's write is in flight now
        second = writer.submit("ns", "a", "uid-a", succeeded())
        await asyncio.sleep(0.05)
        assert not second.done()  # waits for the write before it
        gate.set()
        assert await first
        assert await second

    api = FakeApi()
    run(scenario, api)
    assert [patch["phase"] for _, patch in api.writes] == ["Succeeded", "Running", "Succeeded"]


def test_a_patch_refused_on_top_of_the_batch_is_dropped_without_a_write() -> None:
    api = FakeApi()

    async def scenario(writer: StatusWriter) -> tuple[bool, bool]:
        done = writer.submit("ns", "a", "uid-a", succeeded())
        late = writer.submit("ns", "a", "uid-a", running())
        return await done, await late

    assert run(scenario, api) == (True, False)
    assert [patch["phase"] for _, patch in api.writes] == ["Succeeded"]


def test_a_batch_refused_for_good_is_written_patch_by_patch() -> None:
    async def refuse_outputs(patch: dict[str, Any]) -> bool:
        if patch["phase"] == "Succeeded":
            raise ApiException(status=422, reason="Unprocessable Entity")
        return True

    api = FakeApi(refuse_outputs)

    async def scenario(writer: StatusWriter) -> list[bool | BaseException]:
        parts = [
            writer.submit("ns", "a", "uid-a", scheduled()),
            writer.submit("ns", "a", "uid-a", succeeded()),
        ]
        return list(await asyncio.gather(*parts, return_exceptions=True))

    started, refused = run(scenario, api)
    assert started is True
    assert isinstance(refused, ApiException)
    assert refused.status == 422
    assert [patch["phase"] for _, patch in api.writes] == ["Succeeded", "Scheduled", "Succeeded"]


def test_a_transient_failure_fails_every_patch_of_the_batch() -> None:
    async def unavailable(patch: dict[str, Any]) -> bool:
        raise ApiException(status=503, reason="Service Unavailable")

    api = FakeApi(unavailable)

    async def scenario(writer: StatusWriter) -> list[bool | BaseException]:
        parts = [
            writer.submit("ns", "a", "uid-a", scheduled()),
            writer.submit("ns", "a", "uid-a", succeeded()),
        ]
        return list(await asyncio.gather(*parts, return_exceptions=True))

    outcomes = run(scenario, api)
    assert [getattr(error, "status", None) for error in outcomes] == [503, 503]
    assert len(api.writes) == 1  # each submitter retries as it would its own write


def test_close_writes_open_batches_without_waiting_out_the_window() -> None:
    api = FakeApi()

    async def scenario(writer: StatusWriter) -> bool:
        opened = time.monotonic()
        pending = writer.submit("ns", "a", "uid-a", running())
        await writer.close(within=5)
        assert time.monotonic() - opened < WINDOW
        return await pending

    assert run(scenario, api) is True
    assert len(api.writes) == 1


def test_flush_writes_the_open_batch_now_and_waits_for_it() -> None:
    api = FakeApi()

    async def scenario(writer: StatusWriter) -> bool:
        opened = time.monotonic()
        pending = writer.submit("ns", "a", "uid-a", running())
        await writer.flush("uid-a")
        assert pending.done()
        assert time.monotonic() - opened < WINDOW
        await writer.flush("uid-other")  # nothing open: returns at once
        return await pending

    assert run(scenario, api) is True
