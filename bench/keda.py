"""KEDA beside the local stack, for bench/autoscale.py only (never part of `make up`).

`running_keda(watch_namespace)` starts KEDA's operator and metrics adapter as local
processes (built by hack/build-keda.sh into .diffleet/bin) and wires them as a cluster
would have them:

- KEDA's CRDs, and a namespace `keda` (its POD_NAMESPACE).
- One certificate authority and one certificate (localhost, 127.0.0.1) in a scratch
  directory: the operator's gRPC metrics service and the adapter's client of it use them
  for mutual TLS (KEDA's own rotation is off), and the adapter serves its API with them.
- The adapter registered as the APIService v1beta1.external.metrics.k8s.io (caBundle:
  that authority) behind an ExternalName Service `localhost`: kube-apiserver's
  aggregator dials an ExternalName's host directly, so no cluster IP (no kube-proxy here)
  and no --enable-aggregator-routing is needed. kube-apiserver has no proxy client
  certificate, so the aggregator's requests reach the adapter anonymous: system:anonymous
  may read external metrics while KEDA runs.
- The HPA controller is kube-controller-manager's, at its default 15 s sync period.

On exit everything is removed again, the APIService first: an unavailable aggregated API
stalls namespace deletion for everyone on the stack.
"""

import base64
import datetime
import ipaddress
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bench.api import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".diffleet" / "bin"
# kubectl -f reads a directory, not a link to one.
CRDS = (BIN / "keda-crds").resolve()
LOGS = ROOT / ".diffleet" / "logs"
KEDA_VERSION = next(
    line.split("=", 1)[1]
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines()
    if line.startswith("KEDA_VERSION=")
)
NAMESPACE = "keda"
APISERVICE = "v1beta1.external.metrics.k8s.io"
SERVICE = "keda-metrics-apiserver"
ANONYMOUS_READER = "diffleet-bench-keda-external-metrics"


def kubectl(*args: str, stdin: str = "") -> str:
    done = subprocess.run(
        ["kubectl", "--request-timeout=30s", *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"kubectl {' '.join(args[:3])}: {done.stderr.strip()}")
    return done.stdout


def write_certificates(directory: Path) -> bytes:
    """ca.crt, tls.crt and tls.key as KEDA reads them from --cert-dir; returns the CA."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "diffleet-bench-keda-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [
        x509.DNSName("localhost"),  # the gRPC metrics service
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName(f"{SERVICE}.{NAMESPACE}.svc"),  # the name the aggregator verifies
    ]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (directory / "ca.crt").write_bytes(ca_pem)
    (directory / "tls.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem


def wiring(adapter_port: int, ca_pem: bytes) -> list[dict[str, object]]:
    """The objects that make the adapter an aggregated API of kube-apiserver."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": ANONYMOUS_READER},
            "rules": [
                {
                    "apiGroups": ["external.metrics.k8s.io"],
                    "resources": ["*"],
                    "verbs": ["get", "list", "watch"],
                },
                {  # discovery and OpenAPI, which the aggregator reads too
                    "nonResourceURLs": ["/apis/external.metrics.k8s.io*", "/openapi/*"],
                    "verbs": ["get"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": ANONYMOUS_READER},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": ANONYMOUS_READER,
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": "system:anonymous",
                }
            ],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "service": {
                    "name": SERVICE,
                    "namespace": NAMESPACE,
                    "port": adapter_port,
                },
                "caBundle": base64.b64encode(ca_pem).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def spawn(name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    LOGS.mkdir(parents=True, exist_ok=True)
    with (LOGS / f"{name}.log").open("ab") as out:
        return subprocess.Popen(
            command, env={**os.environ, **env}, stdout=out, stderr=out, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def wait_until(what: str, seconds: float, check: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(0.5)


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).is_success
    except httpx.HTTPError:
        return False


def available() -> bool:
    """The aggregator reaches the adapter (APIService condition Available)."""
    service = json.loads(kubectl("get", "apiservice", APISERVICE, "-o", "json"))
    conditions = (service.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)


@contextmanager
def running_keda(watch_namespace: str) -> Iterator[None]:
    """KEDA's operator and metrics adapter, watching one namespace, wired as above."""
    kubectl("apply", "--server-side", "-f", str(CRDS))
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="keda-certs-") as scratch:
        certs = Path(scratch)
        ca_pem = write_certificates(certs)
        health, grpc, adapter = free_port(), free_port(), free_port()
        env = {
            "POD_NAMESPACE": NAMESPACE,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
            "WATCH_NAMESPACE": watch_namespace,
        }
        listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": wiring(adapter, ca_pem)})
        try:
            kubectl("apply", "-f", "-", stdin=listed)
            processes.append(spawn("keda-operator", [
                str(BIN / "keda-operator"),
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
                f"--health-probe-bind-address=127.0.0.1:{health}",
                f"--metrics-service-bind-address=127.0.0.1:{grpc}",
                f"--cert-dir={certs}",
                "--enable-cert-rotation=false",
                "--enable-webhook-patching=false",
                "--enable-apiservice-patching=false",
                "--leader-elect=false",
            ], env))  # fmt: skip
            wait_until("KEDA operator healthy", 120,
                       lambda: healthy(f"http://127.0.0.1:{health}/healthz"))  # fmt: skip
            kubeconfig = os.environ["KUBECONFIG"]
            processes.append(spawn("keda-adapter", [
                str(BIN / "keda-adapter"),
                f"--secure-port={adapter}",
                "--bind-address=127.0.0.1",
                f"--tls-cert-file={certs / 'tls.crt'}",
                f"--tls-private-key-file={certs / 'tls.key'}",
                f"--cert-dir={certs}",
                f"--port={free_port()}",
                f"--metrics-service-address=127.0.0.1:{grpc}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--lister-kubeconfig={kubeconfig}",
            ], env))  # fmt: skip
            wait_until("KEDA's APIService Available", 120, available)
            yield
        finally:
            kubectl("delete", "apiservice", APISERVICE, "--ignore-not-found")
            for process in reversed(processes):
                stop(process)
            kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=listed)
            kubectl("delete", "--ignore-not-found", "--wait=false", "-f", str(CRDS))
