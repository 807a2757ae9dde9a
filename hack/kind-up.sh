#!/usr/bin/env bash
# For users with Docker (untested here: these machines have no Docker engine): a kind
# cluster whose worker nodes carry the same pool labels and taints as the local stack's
# simulated GPU nodes, with the CRDs and the diffleet-system namespace applied. kind's
# nodes have no GPUs; give them the nvidia.com/gpu resource with a device plugin or run
# on real GPU nodes (the Helm chart and terraform/ do) to place real work.
set -euo pipefail
LOG_TAG=kind
source "$(dirname "$0")/lib.sh"

command -v kind >/dev/null || die "kind is not installed (https://kind.sigs.k8s.io)"
command -v docker >/dev/null || die "kind needs Docker"
cluster=diffleet

nodes=""
for pool in h100 a100 t4; do
  nodes+="
- role: worker
  labels: {diffleet.io/pool: $pool}
  kubeadmConfigPatches:
  - |
    kind: JoinConfiguration
    nodeRegistration:
      taints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]"
done

log "creating kind cluster '$cluster' (node image kindest/node:$KUBERNETES_VERSION)"
kind create cluster --name "$cluster" --image "kindest/node:$KUBERNETES_VERSION" --config - <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
- role: control-plane$nodes
EOF
kubectl create namespace diffleet-system --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f "$ROOT/crds/"
log "kind cluster ready: kubectl config use-context kind-$cluster"
