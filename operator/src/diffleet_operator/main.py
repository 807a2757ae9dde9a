"""Entry point of `diffleet-operator`: runs kopf with diffleet's handlers."""

import argparse
import logging

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: object) -> None:
    """Operator-wide kopf settings: Kubernetes Events for warnings and errors only."""
    settings.posting.level = logging.WARNING


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="diffleet-operator",
        description="Runs the diffleet operator against the cluster of the current kubeconfig.",
    )
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="probe URL")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    kopf.run(clusterwide=True, standalone=True, liveness_endpoint=args.liveness)
