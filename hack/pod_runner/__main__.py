"""python -m hack.pod_runner [--port N]: runs diffleet's pods bound to kwok nodes and
forwards their NodePort Services' node ports; serves /healthz and /pods (what runs, and
how) on 127.0.0.1:N. SIGTERM stops every container."""

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from aiohttp import web
from kubernetes_asyncio import client, config

from hack.pod_runner.environment import ROOT
from hack.pod_runner.proxy import NodePortProxy
from hack.pod_runner.watcher import PodRunner
from hack.pod_runner.workloads import PodLogHandler

logger = logging.getLogger("pod_runner")
STOP_GRACE_SECONDS = 10.0


async def serve_report(runner: PodRunner, port: int) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def pods(_: web.Request) -> web.Response:
        return web.json_response({"pods": runner.report()})

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/pods", pods)])
    site_runner = web.AppRunner(app, access_log=None)
    await site_runner.setup()
    await web.TCPSite(site_runner, "127.0.0.1", port).start()
    return site_runner


async def main(port: int, state_dir: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await config.load_kube_config()
    api = client.ApiClient()
    runner = PodRunner(api, state_dir)
    report = await serve_report(runner, port)
    watching = asyncio.create_task(runner.run())
    proxy = NodePortProxy(api, runner.endpoints)
    proxying = asyncio.create_task(proxy.run())
    logger.info("pod runner up; report on http://127.0.0.1:%s/pods", port)
    try:
        await stop.wait()
    finally:
        watching.cancel()
        proxying.cancel()
        await proxy.stop()
        await runner.stop(STOP_GRACE_SECONDS)
        await report.cleanup()
        await api.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m hack.pod_runner", description=__doc__)
    parser.add_argument("--port", type=int, default=20284, help="/healthz and /pods")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".diffleet")
    args = parser.parse_args()
    log_format = "%(asctime)s %(levelname)s %(name)s %(message)s"
    logging.basicConfig(level=logging.INFO, format=log_format)
    pod_logs = PodLogHandler()
    pod_logs.setFormatter(logging.Formatter(log_format))
    logging.getLogger().addHandler(pod_logs)
    asyncio.run(main(args.port, args.state_dir))
