#!/usr/bin/env bash
# The main job end to end, on the local stack that `make up` started: a GenerationJob
# is applied with kubectl, the operator takes it and reports in its status. Until the
# worker and its model micro-shapes exist (issue 4), it waits Pending for the model.
set -euo pipefail
LOG_TAG=demo
source "$(dirname "$0")/lib.sh"
eval "$("$ROOT/hack/stack.sh" env)"

namespace=diffleet-demo
kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
log "applying manifests/examples/generationjob.yaml to namespace $namespace"
kubectl apply -n "$namespace" -f "$ROOT/manifests/examples/generationjob.yaml"
kubectl wait generationjob/red-circle -n "$namespace" --for=jsonpath='{.status.phase}' \
  --timeout=60s >/dev/null
log "as the API server returns it, with the operator's status:"
kubectl get generationjobs.diffleet.io -n "$namespace"
kubectl get generationjob red-circle -n "$namespace" -o yaml
log "the GPU pools it can run on:"
kubectl get nodes -L diffleet.io/pool,nvidia.com/gpu.memory -l type=kwok
log "done; 'eval \"\$(make -s env)\"' points your shell at the stack, 'make down' stops it"
