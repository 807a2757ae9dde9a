"""The operator's readiness, on `GET /readyz` at `readiness_port`: 200 while it reaches
the API server (a Lease read within the renew deadline) and, while it leads, RabbitMQ;
503 otherwise. kopf's liveness endpoint only says that the watches run (a leader that
lost RabbitMQ is alive and reconnecting, not ready)."""

from aiohttp import web

from diffleet_core.broker import Broker
from diffleet_operator.leader import LeaderElection


class Readiness:
    def __init__(self, election: LeaderElection) -> None:
        self.election = election
        # The leader's broker while it leads; a standby needs no RabbitMQ.
        self.broker: Broker | None = None
        self._runner: web.AppRunner | None = None

    def report(self) -> dict[str, bool]:
        report = {"apiServer": self.election.reaches_api_server(), "leading": False}
        if self.broker is not None:
            report |= {"leading": True, "rabbitmq": self.broker.connected}
        report["ready"] = report["apiServer"] and report.get("rabbitmq", True)
        return report

    async def serve(self, port: int, host: str) -> None:
        app = web.Application()
        app.add_routes([web.get("/readyz", self._answer)])
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, _: web.Request) -> web.Response:
        report = self.report()
        return web.json_response(report, status=200 if report["ready"] else 503)
