"""A fleet as bench/scale.py runs it, small: workers hosted many to a process, one per
node, concurrency = the node's GPUs, timings modelled by GPU type, Leases at the fleet
tuning (90 s duration, a heartbeat every 30 s, a renewal when hot models change)."""

from datetime import datetime
from typing import Any

from tests.support.platform import Platform, apply_job, register_model, spawn, wait_for_phase
from tests.support.polling import eventually
from tests.support.stack import Kubectl

# pool (= GPU type): (GPUs per node, nodes); 50 workers in all, a process per pool.
POOLS = {"h100": (8, 15), "a100": (8, 15), "t4": (4, 20)}
JOBS_PER_POOL = 3


def host(platform: Platform, pool: str, gpus: int, nodes: int) -> None:
    env = platform.common_env() | {
        "DIFFLEET_WORKER_WORKER_ID": pool,
        "DIFFLEET_WORKER_NODE": f"node-{pool}",
        "DIFFLEET_WORKER_POOL": pool,
        "DIFFLEET_WORKER_GPU_TYPE": pool,
        "DIFFLEET_WORKER_CONCURRENCY": str(gpus),
        "DIFFLEET_WORKER_FLEET_NAMESPACE": platform.namespace,
        "DIFFLEET_WORKER_SIM_GPU_PROFILE": "true",
        "DIFFLEET_WORKER_LEASE_SECONDS": "90",
        "DIFFLEET_WORKER_RENEW_SECONDS": "30",
        "DIFFLEET_WORKER_SHUTDOWN_GRACE_SECONDS": "2",
    }
    command = ["diffleet-worker", "--simulate", "--replicas", str(nodes)]
    platform.processes.append(spawn(f"{platform.namespace}-{pool}", command, env))


def seconds(status: dict[str, Any]) -> float:
    started, completed = status["startedAt"], status["completedAt"]
    return (datetime.fromisoformat(completed) - datetime.fromisoformat(started)).total_seconds()


def test_hosted_workers_run_jobs_by_gpu_type_and_announce_hot_models_at_once(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    operator = platform.operator()
    for pool, (gpus, nodes) in POOLS.items():
        host(platform, pool, gpus, nodes)
    digest = register_model(kubectl, namespace, "m")
    for pool, (_, nodes) in POOLS.items():
        platform.wait_for_workers(operator, pool, nodes, timeout=60)
    leases = kubectl.json("get", "leases", "-n", namespace, "-l", "diffleet.io/worker=true")
    assert len(leases["items"]) == 50
    assert {lease["spec"]["leaseDurationSeconds"] for lease in leases["items"]} == {90}

    for pool in POOLS:
        for i in range(JOBS_PER_POOL):
            apply_job(kubectl, namespace, f"{pool}-{i}", model="m", gpuClass=pool)
    done = {
        (pool, i): wait_for_phase(kubectl, namespace, f"{pool}-{i}", "Succeeded", timeout=60)
        for pool in POOLS
        for i in range(JOBS_PER_POOL)
    }
    for (pool, _), status in done.items():
        assert status["pool"] == pool
        # Replica i of the pool's process is the worker of node node-<pool>-i.
        assert status["node"] == f"node-{status['worker']}"
        assert status["worker"].startswith(f"{pool}-")
    # Modelled by GPU type: a cold SD 1.5 load and 4 steps take about 7 s on a T4 and
    # 2 s on an H100.
    t4 = [seconds(s) for (pool, _), s in done.items() if pool == "t4"]
    h100 = [seconds(s) for (pool, _), s in done.items() if pool == "h100"]
    assert min(t4) > max(h100)

    # The heartbeat is 30 s away (its first period a random part of it), yet every
    # worker that ran a job lists the model hot within seconds: a change is announced.
    ran = {status["worker"] for status in done.values()}

    def announced() -> bool:
        items = kubectl.json("get", "leases", "-n", namespace, "-l", "diffleet.io/worker=true")
        hot = {
            lease["metadata"]["name"]
            for lease in items["items"]
            if digest in lease["metadata"]["annotations"]["diffleet.io/inventory"]
        }
        return ran <= hot

    eventually(announced, timeout=5, what="every worker that ran a job announces the model hot")
