"""Issue 12: a stream of jobs loses nothing while components are SIGKILLed and restarted.

`make test` runs the bounded stream (200 jobs; RabbitMQ, kube-apiserver and the operator
leader killed); `make chaos` the full one (DIFFLEET_CHAOS_SIZE=full: 1,000 jobs, every
component and three pairs), which writes its figures to bench/results/chaos.md."""

import os
from datetime import date

import pytest

from tests.chaos.harness import Stream, chosen_plan, guarded
from tests.support.platform import Platform
from tests.support.stack import ROOT, Kubectl

pytestmark = pytest.mark.disruptive

RESULTS = ROOT / "bench" / "results" / "chaos.md"
HEADER = """# Chaos: `make chaos`

Measured by `make chaos` on {day}, {cores} cores, on the local stack: 1,000 jobs on six
simulated workers, a quarter through the REST API with webhooks; each kill step SIGKILLs
its components and restarts them. Restart: kill to restarted; then the time until the
next job ends.

"""


def test_a_stream_of_jobs_survives_every_kill(kubectl: Kubectl, platform: Platform) -> None:
    size, plan = chosen_plan()
    stream = Stream(kubectl, platform, plan)
    try:
        stream.start()
        guarded(stream.run)
        figures = stream.check()
    finally:
        stream.stop()
    report = figures.table()
    print(f"\nchaos ({size}):\n{report}")
    if size == "full":
        RESULTS.write_text(f"{HEADER.format(day=date.today(), cores=os.cpu_count())}{report}\n")
    assert figures.lost == {}
    assert figures.failed == {}
    assert figures.duplicate_outputs == figures.missing_outputs == 0
    assert figures.ledger_imbalance == 0
    assert figures.unsettled == []
    assert all(count >= 1 for count in figures.webhook_deliveries.values())
    assert figures.webhook_ids_unstable == []
    assert figures.elapsed_seconds <= plan.budget_seconds
