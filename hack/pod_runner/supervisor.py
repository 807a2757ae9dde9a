"""One pod's life on this host: runs, restarts and stops its container, writes its status."""

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from hack.pod_runner import environment, probes
from hack.pod_runner.addresses import PodAddresses
from hack.pod_runner.environment import REQUEST_TIMEOUT, EnvError
from hack.pod_runner.workloads import (
    HostedWorker,
    LocalProcess,
    Workload,
    container_argv,
    hostable,
)

logger = logging.getLogger("pod_runner")
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0
# A kubelet's default terminationGracePeriodSeconds, and the time it adds after a preStop
# hook that used up the grace period.
DEFAULT_GRACE_SECONDS = 30.0
AFTER_PRE_STOP_SECONDS = 2.0
MERGE_PATCH = "application/merge-patch+json"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def restart_backoff(restarts: int) -> float:
    """Doubling from one second, capped: a crashing command does not spin."""
    return min(BACKOFF_BASE_SECONDS * 2.0 ** max(restarts - 1, 0), BACKOFF_CAP_SECONDS)


async def patch_pod_status(
    core: client.CoreV1Api, pod: client.V1Pod, status: dict[str, Any]
) -> None:
    """A merge patch of the pod's status; its uid makes it fail on a replaced pod."""
    # _content_type is a runtime keyword that the bundled stubs do not declare.
    await core.patch_namespaced_pod_status(  # type: ignore[call-arg]
        pod.metadata.name,
        pod.metadata.namespace,
        {"metadata": {"uid": pod.metadata.uid}, "status": status},
        _content_type=MERGE_PATCH,
        _request_timeout=REQUEST_TIMEOUT,
    )


class PodSupervisor:
    """Plays the kubelet for one pod: started by the watcher, told of its deletion."""

    def __init__(
        self,
        api: client.ApiClient,
        pod: client.V1Pod,
        state_dir: Path,
        addresses: PodAddresses,
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.pod = pod
        self.name: str = pod.metadata.name
        self.namespace: str = pod.metadata.namespace
        self.uid: str = pod.metadata.uid
        self.container: client.V1Container = pod.spec.containers[0]
        self.log_path = state_dir / "logs" / "pods" / f"{self.namespace}_{self.name}.log"
        self.kubeconfig = state_dir / "run" / "pods" / f"{self.namespace}_{self.name}.kubeconfig"
        self.pid_file = self.kubeconfig.with_suffix(".pid")
        self._addresses = addresses
        previous_ip = pod.status.pod_ip if pod.status else None
        self.address = addresses.allocate(self.uid, previous_ip)
        self.ready = False
        self.workload: Workload | None = None
        self._deleting = asyncio.Event()
        grace = pod.spec.termination_grace_period_seconds
        self._grace = DEFAULT_GRACE_SECONDS if grace is None else float(grace)
        previous = (pod.status.container_statuses or []) if pod.status else []
        # A pod adopted after a restart of the runner keeps counting its restarts.
        self.restarts = previous[0].restart_count + 1 if previous else 0
        self._started_at = ""
        self._env: dict[str, str] = {}
        self.task = asyncio.create_task(self._run(), name=f"pod {self.namespace}/{self.name}")

    @property
    def deleting(self) -> bool:
        return self._deleting.is_set()

    def delete(self, grace_seconds: float) -> None:
        """The pod is being deleted: stop its container within `grace_seconds`."""
        self._grace = min(self._grace, grace_seconds) if self._deleting.is_set() else grace_seconds
        self._deleting.set()

    async def _run(self) -> None:
        try:
            await self._lifecycle()
        except Exception:  # one bad pod must not stop the runner
            logger.exception("pod %s/%s", self.namespace, self.name)
            await self._patch_status({"phase": "Failed", "reason": "PodRunnerError"})
            await self._deleting.wait()
            await self._remove()
        finally:
            self.ready = False
            self._addresses.release(self.uid)

    async def _lifecycle(self) -> None:
        policy = self.pod.spec.restart_policy or "Always"
        while not self._deleting.is_set():
            try:
                self.workload = await self._start()
            except (EnvError, client.ApiException) as error:
                # A missing Secret, or a token refused: retried, as a kubelet retries.
                message = error.reason if isinstance(error, client.ApiException) else str(error)
                logger.warning("pod %s/%s: cannot start: %s", self.namespace, self.name, message)
                await self._report_waiting("CreateContainerConfigError", str(message))
                await self._pause(restart_backoff(self.restarts + 1))
                continue
            code = await self._until_exit_or_deletion(self.workload)
            if code is None:
                break
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                await self._report_finished(code)
                await self._deleting.wait()
                break
            self.restarts += 1
            await self._report_waiting("CrashLoopBackOff", f"exited with {code}", code)
            await self._pause(restart_backoff(self.restarts))
        await self._remove()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._deleting.wait(), seconds)

    async def _start(self) -> Workload:
        values = await environment.pod_env(self.core, self.pod, self.address)
        token = await environment.service_account_token(self.core, self.pod)
        environment.write_kubeconfig(self.kubeconfig, self.api.configuration, token)
        env = environment.process_env(values, self.kubeconfig)
        argv = container_argv(self.container)
        if not argv:
            raise EnvError(f"no command, and image {self.container.image} has no entrypoint here")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- {now()} start {self.restarts}: {' '.join(argv)}\n".encode())
            if hostable(argv, values):
                log.write(b"hosted in the pod runner's process\n")
                log.flush()
                workload: Workload = await HostedWorker.start(
                    values, self.kubeconfig, self.log_path
                )
            else:
                workload = await LocalProcess.start(argv, env, log, self.pid_file)
        self._started_at = now()
        logger.info("pod %s/%s: %s %s", self.namespace, self.name, workload.kind, workload.pid)
        self._env = env
        return workload

    async def _until_exit_or_deletion(self, workload: Workload) -> int | None:
        """The exit code, or None once the pod's deletion has stopped the workload."""
        probe = self.container.readiness_probe
        await self._report_running(ready=probe is None)
        readiness = (
            asyncio.create_task(
                probes.watch_readiness(
                    probe, self.container, self._env, self.address, self._report_ready
                )
            )
            if probe
            else None
        )
        exited = asyncio.create_task(workload.wait())
        deleting = asyncio.create_task(self._deleting.wait())
        try:
            await asyncio.wait({exited, deleting}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                self.ready = False
                return exited.result()
            # Still serving while it terminates: the proxy turns to it only when no other
            # pod of its Services is ready (as kube-proxy treats terminating endpoints).
            deadline = asyncio.get_running_loop().time() + self._grace
            await self._pre_stop(exited)
            workload.terminate()
            left = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(asyncio.shield(exited), max(left, AFTER_PRE_STOP_SECONDS))
            except TimeoutError:
                logger.info("pod %s/%s: killed after %ss", self.namespace, self.name, self._grace)
                workload.kill()
                await exited
            return None
        finally:
            for task in (readiness, deleting):
                if task:
                    task.cancel()

    async def _pre_stop(self, exited: "asyncio.Task[int]") -> None:
        """The container's preStop hook (sleep or exec), within the grace period; cut short
        when the container exits on its own."""
        hook = self.container.lifecycle.pre_stop if self.container.lifecycle else None
        if hook is None:
            return
        if hook.sleep:
            run: Any = asyncio.sleep(hook.sleep.seconds)
        elif hook._exec:
            run = self._exec_hook(hook._exec.command)
        else:
            logger.warning("pod %s/%s: preStop: only sleep and exec run", self.namespace, self.name)
            return
        hooked = asyncio.ensure_future(run)
        done, _ = await asyncio.wait({hooked, exited}, timeout=self._grace)
        if hooked not in done:
            hooked.cancel()

    async def _exec_hook(self, command: list[str]) -> None:
        process = await asyncio.create_subprocess_exec(
            *command,
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await process.wait()
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()

    async def stop(self, grace_seconds: float) -> None:
        """The runner is stopping: end the workload, leave the pod to the next runner."""
        self.task.cancel()
        workload = self.workload
        if workload is None:
            return
        workload.terminate()
        try:
            await asyncio.wait_for(workload.wait(), grace_seconds)
        except TimeoutError:
            workload.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(workload.wait(), 5)

    # ------------------------------------------------------------ status

    def _container_status(self, ready: bool, state: dict[str, Any], last: Any = None) -> Any:
        return {
            "name": self.container.name,
            "image": self.container.image or "",
            "imageID": "",
            "containerID": f"pod-runner://{self.uid}-{self.restarts}",
            "ready": ready,
            "started": "running" in state,
            "restartCount": self.restarts,
            "state": state,
            "lastState": last or {},
        }

    def _conditions(self, ready: bool) -> list[dict[str, str]]:
        at = now()
        flag = "True" if ready else "False"
        return [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": at},
            {"type": "Initialized", "status": "True", "lastTransitionTime": at},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": at},
            {"type": "Ready", "status": flag, "lastTransitionTime": at},
        ]

    async def _report_running(self, ready: bool) -> None:
        self.ready = ready
        state = {"running": {"startedAt": self._started_at}}
        await self._patch_status(
            {
                "phase": "Running",
                "startTime": self._started_at,
                "podIP": self.address,
                "podIPs": [{"ip": self.address}],
                "hostIP": self.address,
                "hostIPs": [{"ip": self.address}],
                "conditions": self._conditions(ready),
                "containerStatuses": [self._container_status(ready, state)],
            },
            keep_start_time=True,
        )

    async def _report_ready(self, ready: bool) -> None:
        self.ready = ready
        state = {"running": {"startedAt": self._started_at}}
        await self._patch_status(
            {
                "conditions": self._conditions(ready),
                "containerStatuses": [self._container_status(ready, state)],
            }
        )

    def _terminated(self, code: int) -> dict[str, Any]:
        return {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": self._started_at,
                "finishedAt": now(),
            }
        }

    async def _report_waiting(self, reason: str, message: str, code: int | None = None) -> None:
        self.ready = False
        last = self._terminated(code) if code is not None else None
        waiting = {"waiting": {"reason": reason, "message": message}}
        await self._patch_status(
            {
                "phase": "Running" if self.restarts else "Pending",
                "conditions": self._conditions(False),
                "containerStatuses": [self._container_status(False, waiting, last)],
            }
        )

    async def _report_finished(self, code: int) -> None:
        await self._patch_status(
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": self._conditions(False),
                "containerStatuses": [self._container_status(False, self._terminated(code))],
            }
        )

    async def _patch_status(self, status: dict[str, Any], keep_start_time: bool = False) -> None:
        if keep_start_time and self.pod.status and self.pod.status.start_time:
            status.pop("startTime", None)  # the pod's first start, as a kubelet keeps it
        try:
            await patch_pod_status(self.core, self.pod, status)
        except client.ApiException as error:
            # Gone or replaced: the watcher hears of it and acts; nothing to write here.
            logger.warning("pod %s/%s status: %s", self.namespace, self.name, error.reason)

    async def _remove(self) -> None:
        """The container has exited: the pod goes, as a kubelet finishes a deletion."""
        self.kubeconfig.unlink(missing_ok=True)
        try:
            await self.core.delete_namespaced_pod(
                self.name,
                self.namespace,
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=self.uid)
                ),
                _request_timeout=REQUEST_TIMEOUT,
            )
        except client.ApiException as error:
            if error.status not in (404, 409):
                raise
        logger.info("pod %s/%s removed", self.namespace, self.name)
