#!/usr/bin/env bash
# The local stack on loopback: a real Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler), kwok simulating the system node and the GPU
# node pools, the pod runner, RabbitMQ, PostgreSQL and MinIO. Every process is started
# here, recorded in a pid file under .diffleet/run and logged under .diffleet/logs; `down`
# stops all of them. The platform is the Helm chart (charts/diffleet), installed as release
# diffleet in diffleet-system, whose pods the pod runner runs (.diffleet/run/pods/*.pid).
#
#   stack.sh up-infra | up | up-karpenter | down | down-platform | status | env | kubeconfig |
#   restart NAME...
set -euo pipefail
LOG_TAG=stack
source "$(dirname "$0")/lib.sh"
# shellcheck source=hack/stack.env
source "$ROOT/hack/stack.env"

CERT_DIR="$STATE_DIR/pki"
KUBECONFIG_PATH="$STATE_DIR/kubeconfig"
H="$STACK_HOST"
# Infrastructure processes in start order; `down` stops them in reverse.
INFRA=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok pod-runner karpenter epmd rabbitmq postgres minio prometheus-sd prometheus otel-collector)
# The platform: the chart's release, with hack/values-local.yaml.
RELEASE=diffleet
RELEASE_NAMESPACE=diffleet-system
CHART="$ROOT/charts/diffleet"
# Components of the release that `status` reports (tests/support/stack.py reads them).
PLATFORM=(operator api gpu-worker)

# ---------------------------------------------------------------- processes

pid_file() { echo "$RUN_DIR/$1.pid"; }

# alive PID: the process exists and is not a zombie. Where PID 1 does not reap orphans (some
# containers), a killed process stays a zombie that `kill -0` still finds.
alive() {
  kill -0 "$1" 2>/dev/null && [[ "$(ps -o stat= -p "$1" 2>/dev/null)" != Z* ]]
}

is_running() {
  local f
  f="$(pid_file "$1")"
  [[ -f "$f" ]] && alive "$(cat "$f")"
}

# spawn NAME COMMAND...: starts COMMAND in its own session (so `down` can signal the
# whole process group), stdout and stderr appended to .diffleet/logs/NAME.log.
spawn() {
  local name="$1"; shift
  if is_running "$name"; then return 0; fi
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  log "starting $name"
  setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null {HEARTBEAT_FD}>&- &
  echo $! >"$(pid_file "$name")"
}

# PostgreSQL's TERM waits for clients to leave; INT is its fast shutdown.
stop_signal() { [[ "$1" == postgres ]] && echo INT || echo TERM; }

# stop NAME...: signals every named process group at once, waits up to 20 seconds for
# all of them to exit, then kills what is left.
stop() {
  local name pid pids=()
  for name in "$@"; do
    [[ -f "$(pid_file "$name")" ]] || continue
    pid="$(cat "$(pid_file "$name")")"
    if alive "$pid"; then
      log "stopping $name"
      kill "-$(stop_signal "$name")" -- "-$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  local deadline=$((SECONDS + 20)) left
  while ((SECONDS < deadline)); do
    left=0
    for pid in "${pids[@]}"; do alive "$pid" && left=1; done
    ((left)) || break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  for name in "$@"; do rm -f "$(pid_file "$name")"; done
}

# wait_for NAME TIMEOUT_SECONDS COMMAND...: polls COMMAND until it succeeds; on timeout
# prints the tail of the component's log and fails.
wait_for() {
  local name="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! is_running "$name"; then
      tail -n 20 "$LOG_DIR/$name.log" >&2 || true
      die "$name exited; log: $LOG_DIR/$name.log"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$LOG_DIR/$name.log" >&2 || true
      die "$name not healthy after ${timeout}s; log: $LOG_DIR/$name.log"
    fi
    sleep 0.5
  done
  log "$name: $1"
}

require_tool() {
  command -v "$1" >/dev/null || die "$1 not found: run 'make setup' first"
}

# ---------------------------------------------------------------- PKI and kubeconfigs

# client_cert NAME CN [ORG]: a client certificate signed by the stack's CA.
client_cert() {
  local name="$1" cn="$2" org="${3:-}"
  local subj="/CN=$cn"
  [[ -n "$org" ]] && subj="/O=$org$subj"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$CERT_DIR/$name.key" \
    -subj "$subj" -out "$CERT_DIR/$name.csr" 2>/dev/null
  openssl x509 -req -in "$CERT_DIR/$name.csr" -CA "$CERT_DIR/ca.crt" -CAkey "$CERT_DIR/ca.key" \
    -CAcreateserial -days 3650 -out "$CERT_DIR/$name.crt" \
    -extfile <(printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n') 2>/dev/null
}

# write_kubeconfig PATH CERT_NAME USER
write_kubeconfig() {
  local path="$1" cert="$2" user="$3"
  cat >"$path" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: diffleet-local
  cluster:
    server: https://$H:$KUBE_APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$CERT_DIR/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$CERT_DIR/$cert.crt")
    client-key-data: $(base64 -w0 "$CERT_DIR/$cert.key")
contexts:
- name: diffleet-local
  context: {cluster: diffleet-local, user: $user}
current-context: diffleet-local
EOF
  chmod 600 "$path"
}

ensure_pki() {
  [[ -f "$CERT_DIR/.complete" ]] && return 0
  log "creating the stack's CA, serving and client certificates"
  rm -rf "$CERT_DIR" && mkdir -p "$CERT_DIR"
  openssl req -x509 -new -newkey rsa:2048 -nodes -days 3650 -subj "/CN=diffleet-local-ca" \
    -keyout "$CERT_DIR/ca.key" -out "$CERT_DIR/ca.crt" 2>/dev/null
  openssl req -new -newkey rsa:2048 -nodes -keyout "$CERT_DIR/apiserver.key" \
    -subj "/CN=kube-apiserver" -out "$CERT_DIR/apiserver.csr" 2>/dev/null
  openssl x509 -req -in "$CERT_DIR/apiserver.csr" -CA "$CERT_DIR/ca.crt" -CAkey "$CERT_DIR/ca.key" \
    -CAcreateserial -days 3650 -out "$CERT_DIR/apiserver.crt" -extfile <(printf '%s\n' \
      'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local' \
      'extendedKeyUsage=serverAuth' 'keyUsage=digitalSignature,keyEncipherment') 2>/dev/null
  openssl genrsa -out "$CERT_DIR/sa.key" 2048 2>/dev/null
  openssl rsa -in "$CERT_DIR/sa.key" -pubout -out "$CERT_DIR/sa.pub" 2>/dev/null
  client_cert admin diffleet-admin system:masters
  client_cert controller-manager system:kube-controller-manager
  client_cert scheduler system:kube-scheduler
  write_kubeconfig "$KUBECONFIG_PATH" admin diffleet-admin
  write_kubeconfig "$CERT_DIR/controller-manager.kubeconfig" controller-manager system:kube-controller-manager
  write_kubeconfig "$CERT_DIR/scheduler.kubeconfig" scheduler system:kube-scheduler
  touch "$CERT_DIR/.complete"
}

kubectl_admin() { kubectl --kubeconfig "$KUBECONFIG_PATH" --request-timeout=10s "$@"; }

# ---------------------------------------------------------------- Kubernetes

start_etcd() {
  require_tool etcd
  spawn etcd etcd --name diffleet --data-dir "$RUN_DIR/etcd" \
    --listen-client-urls "http://$H:$ETCD_CLIENT_PORT" --advertise-client-urls "http://$H:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://$H:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://$H:$ETCD_PEER_PORT" \
    --initial-cluster "diffleet=http://$H:$ETCD_PEER_PORT" --unsafe-no-fsync \
    --quota-backend-bytes $((2 * 1024 * 1024 * 1024)) --log-level warn
}
etcd_healthy() { curl -fsS --max-time 2 "http://$H:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'; }

start_kube_apiserver() {
  require_tool kube-apiserver
  ensure_pki
  spawn kube-apiserver kube-apiserver \
    --etcd-servers "http://$H:$ETCD_CLIENT_PORT" \
    --bind-address "$H" --advertise-address "$H" --secure-port "$KUBE_APISERVER_PORT" \
    --endpoint-reconciler-type none \
    --tls-cert-file "$CERT_DIR/apiserver.crt" --tls-private-key-file "$CERT_DIR/apiserver.key" \
    --client-ca-file "$CERT_DIR/ca.crt" \
    --requestheader-client-ca-file "$CERT_DIR/ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$CERT_DIR/sa.pub" --service-account-signing-key-file "$CERT_DIR/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --service-node-port-range "$NODE_PORT_RANGE" \
    --authorization-mode RBAC --allow-privileged \
    --feature-gates MutatingAdmissionPolicy=true \
    --runtime-config admissionregistration.k8s.io/v1beta1=true
}
apiserver_ready() { kubectl_admin get --raw /readyz; }

start_kube_controller_manager() {
  local kc="$CERT_DIR/controller-manager.kubeconfig"
  spawn kube-controller-manager kube-controller-manager \
    --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address "$H" --secure-port "$KUBE_CONTROLLER_MANAGER_PORT" --leader-elect=false \
    --use-service-account-credentials --service-account-private-key-file "$CERT_DIR/sa.key" \
    --root-ca-file "$CERT_DIR/ca.crt" \
    --cluster-signing-cert-file "$CERT_DIR/ca.crt" --cluster-signing-key-file "$CERT_DIR/ca.key"
}
controller_manager_healthy() { curl -fsSk --max-time 2 "https://$H:$KUBE_CONTROLLER_MANAGER_PORT/healthz"; }

# KUBE_SCHEDULER_EXTRA_ARGS: extra flags (bench/dispatch.py raises the client QPS with it).
start_kube_scheduler() {
  local kc="$CERT_DIR/scheduler.kubeconfig"
  # shellcheck disable=SC2086 # the extra flags are word-split on purpose
  spawn kube-scheduler kube-scheduler \
    --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address "$H" --secure-port "$KUBE_SCHEDULER_PORT" --leader-elect=false \
    ${KUBE_SCHEDULER_EXTRA_ARGS:-}
}
scheduler_healthy() { curl -fsSk --max-time 2 "https://$H:$KUBE_SCHEDULER_PORT/healthz"; }

# kwok's stage configs with every Pod stage skipping diffleet's own pods, whose status the
# pod runner writes: each Pod stage's selector gains a NotIn on the part-of label.
kwok_stages() {
  awk '
    /^---/ { pod = 0 }
    /^    kind: Pod$/ { pod = 1 }
    { print }
    pod && /^    matchExpressions:$/ {
      print "    - key: \x27.metadata.labels[\"app.kubernetes.io/part-of\"]\x27"
      print "      operator: NotIn"
      print "      values: [diffleet]"
    }
  ' "$BIN_DIR/kwok-stages.yaml" >"$RUN_DIR/kwok-stages.yaml"
}

start_kwok() {
  require_tool kwok
  mkdir -p "$RUN_DIR"
  kwok_stages
  spawn kwok kwok --kubeconfig "$KUBECONFIG_PATH" --config "$RUN_DIR/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-label-selector=type=kwok \
    --node-lease-duration-seconds 40 --cidr 10.244.0.0/16 --node-ip 10.0.0.1 \
    --server-address "$H:$KWOK_PORT"
}
kwok_healthy() { curl -fsS --max-time 2 "http://$H:$KWOK_PORT/healthz"; }

# A fleet of the benchmarks' own (bench/scale.py): up-scale POOLS adds the nodes of POOLS
# (KWOK_POOLS' format) labelled type=kwok-scale, with a kwok of their own (kwok-scale) so
# that its node heartbeats are counted and tuned apart from the stack's; down-scale
# removes both. The stack's own nodes stay as they are.
SCALE_NODE_TYPE=kwok-scale
up_scale() {
  require_tool kwok
  kwok_stages
  # kwok renews a node's Lease at a quarter of its duration, as the kubelet does; the
  # node controller marks a node NotReady after 50 s without one, so 120 s (renewals
  # every 30 s) is the longest safe duration. kwok renews 4 Leases at a time by default:
  # at 1,000 nodes on a loaded API server that falls behind 33 renewals a second.
  printf '%s\n' "apiVersion: config.kwok.x-k8s.io/v1alpha1" "kind: KwokConfiguration" \
    "options:" "  nodeLeaseParallelism: 32" "  nodePlayStageParallelism: 16" \
    >"$RUN_DIR/kwok-scale.yaml"
  spawn kwok-scale kwok --kubeconfig "$KUBECONFIG_PATH" --config "$RUN_DIR/kwok-stages.yaml" \
    --config "$RUN_DIR/kwok-scale.yaml" \
    --manage-all-nodes=false --manage-nodes-with-label-selector="type=$SCALE_NODE_TYPE" \
    --node-lease-duration-seconds "${SCALE_NODE_LEASE_SECONDS:-120}" --cidr 10.245.0.0/16 \
    --node-ip 10.0.0.2 --server-address "$H:$KWOK_SCALE_PORT"
  wait_for kwok-scale 60 curl -fsS --max-time 2 "http://$H:$KWOK_SCALE_PORT/healthz"
  # kubectl creates one node at a time: 8 of them side by side.
  local part creates=()
  for part in 0 1 2 3 4 5 6 7; do
    gpu_nodes "$1" "$SCALE_NODE_TYPE" "$part" 8 | kubectl_admin create -f - >/dev/null &
    creates+=($!)
  done
  wait "${creates[@]}" # not kwok-scale, also a child of this shell
}
down_scale() {
  # A deletecollection: the API server deletes them (kubectl would, one by one); a loaded
  # one gives up after its 60 s request timeout with some left, so it is asked again.
  local try
  for try in 1 2 3 4 5 6 7 8 9 10; do
    kubectl_admin delete --raw "/api/v1/nodes?labelSelector=type%3D$SCALE_NODE_TYPE" \
      >/dev/null 2>&1 || true
    [[ -z "$(kubectl_admin get nodes -l "type=$SCALE_NODE_TYPE" -o name 2>/dev/null)" ]] && break
    log "down-scale: nodes left after try $try"
  done
  stop kwok-scale
}

# The kubelet's part for diffleet's pods on kwok nodes (hack/pod_runner); each pod's output
# goes to .diffleet/logs/pods/<namespace>_<name>.log.
start_pod_runner() {
  (
    eval "$(print_env)"
    cd "$ROOT"
    spawn pod-runner "$ROOT/.venv/bin/python" -m hack.pod_runner --port "$POD_RUNNER_PORT" \
      --state-dir "$STATE_DIR"
  )
  wait_for pod-runner 60 pod_runner_healthy
}
pod_runner_healthy() { curl -fsS --max-time 2 "http://$H:$POD_RUNNER_PORT/healthz"; }

# The node of the platform's own pods (the operator, the API, the drain hook's Job):
# untainted and without GPUs, so that only pods that tolerate no GPU taint land here.
system_node() {
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: system-0
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: system-0
    diffleet.io/role: system
status:
  allocatable: {cpu: "16", memory: 64Gi, pods: "110"}
  capacity: {cpu: "16", memory: 64Gi, pods: "110"}
EOF
}

# The simulated GPU nodes of each pool (hack/stack.env KWOK_POOLS). gpu_nodes POOLS TYPE
# PART PARTS: the nodes of POOLS (that format), named TYPE-<pool>-<i> and labelled
# type=TYPE (the kwok that manages them selects by it); of those, the i with
# i % PARTS == PART (so that several clients can create them side by side).
gpu_nodes() {
  local pools="${1:-$KWOK_POOLS}" type="${2:-kwok}" part="${3:-0}" parts="${4:-1}"
  local spec pool gpu_type gpus memory count i
  for spec in $pools; do
    IFS=: read -r pool gpu_type gpus memory count <<<"$spec"
    for ((i = part; i < count; i += parts)); do
      cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $type-$pool-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: $type
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: $type-$pool-$i
    node.kubernetes.io/instance-type: gpu-$pool
    diffleet.io/pool: $pool
    nvidia.com/gpu.product: $gpu_type
    nvidia.com/gpu.count: "$gpus"
    nvidia.com/gpu.memory: "$memory"
spec:
  taints:
  - {key: nvidia.com/gpu, value: present, effect: NoSchedule}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110", nvidia.com/gpu: "$gpus"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110", nvidia.com/gpu: "$gpus"}
EOF
    done
  done
}

expected_nodes() {
  local spec n=1 count # the system node, and the GPU nodes
  for spec in $KWOK_POOLS; do count="${spec##*:}"; n=$((n + count)); done
  echo "$n"
}
nodes_ready() {
  local ready
  ready="$(kubectl_admin get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)"
  [[ "$ready" -ge "$(expected_nodes)" ]]
}

apply_cluster_objects() {
  { system_node && gpu_nodes; } | kubectl_admin apply -f - >/dev/null
  kubectl_admin create namespace diffleet-system --dry-run=client -o yaml | kubectl_admin apply -f - >/dev/null
  kubectl_admin apply -f "$ROOT/crds/" >/dev/null
  kubectl_admin wait --for condition=Established --timeout=60s -f "$ROOT/crds/" >/dev/null
  kubectl_admin apply -f "$ROOT/manifests/admission/" >/dev/null
  apply_rbac
  apply_styles
}

# The ServiceAccounts and RBAC of manifests/rbac (the chart's render for release diffleet),
# for the tests' own operators and workers while the release is not installed.
apply_rbac() {
  kubectl_admin apply -f "$ROOT/manifests/rbac/" >/dev/null
}

# The platform's StylePresets of manifests/styles (the chart's render), in diffleet-system.
apply_styles() {
  kubectl_admin apply -f "$ROOT/manifests/styles/" >/dev/null
}

# ---------------------------------------------------------------- Karpenter

# Karpenter's kwok cloud provider makes GPU nodes for pending pods, one NodePool per pool of
# KWOK_POOLS: the same instance type, labels and taint as the static nodes, plus `type: kwok`
# so that kwok keeps them Ready. Only pods that tolerate the GPU taint and fit no static node
# make it provision; it removes a node once the node has been empty for consolidateAfter.
KARPENTER_DIR="$RUN_DIR/karpenter"

# The instance types, one per pool: gpu-<pool>, as the static nodes' instance-type label says.
karpenter_instance_types() {
  local spec pool gpu_type gpus memory count sep=""
  printf '['
  for spec in $KWOK_POOLS; do
    IFS=: read -r pool gpu_type gpus memory count <<<"$spec"
    printf '%s\n  {"name": "gpu-%s", "architecture": "amd64", "operatingSystems": ["linux"],' "$sep" "$pool"
    printf '\n   "resources": {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "%s"},' "$gpus"
    printf '\n   "offerings": [{"Price": 1, "Available": true, "Requirements": ['
    printf '\n     {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},'
    printf '\n     {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["local"]}]}]}'
    sep=","
  done
  printf '\n]\n'
}

karpenter_node_pools() {
  local spec pool gpu_type gpus memory count
  cat <<EOF
---
apiVersion: karpenter.kwok.sh/v1alpha1
kind: KWOKNodeClass
metadata:
  name: default
EOF
  for spec in $KWOK_POOLS; do
    IFS=: read -r pool gpu_type gpus memory count <<<"$spec"
    cat <<EOF
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: $pool
spec:
  template:
    metadata:
      labels:
        type: kwok
        diffleet.io/pool: $pool
        nvidia.com/gpu.product: $gpu_type
        nvidia.com/gpu.count: "$gpus"
        nvidia.com/gpu.memory: "$memory"
    spec:
      nodeClassRef: {group: karpenter.kwok.sh, kind: KWOKNodeClass, name: default}
      taints:
      - {key: nvidia.com/gpu, value: present, effect: NoSchedule}
      requirements:
      - {key: node.kubernetes.io/instance-type, operator: In, values: [gpu-$pool]}
      - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
      expireAfter: Never
  disruption:
    consolidationPolicy: WhenEmpty
    consolidateAfter: $KARPENTER_CONSOLIDATE_AFTER
  limits:
    nodes: "$KARPENTER_MAX_NODES_PER_POOL"
EOF
  done
}

apply_karpenter_objects() {
  kubectl_admin apply --server-side -f "$BIN_DIR/karpenter-crds/" >/dev/null
  kubectl_admin wait --for condition=Established --timeout=60s -f "$BIN_DIR/karpenter-crds/" >/dev/null
  karpenter_node_pools | kubectl_admin apply -f - >/dev/null
}

# Runs outside the cluster as the stack's admin, without leader election (one replica).
start_karpenter() {
  require_tool karpenter
  apply_karpenter_objects
  mkdir -p "$KARPENTER_DIR"
  karpenter_instance_types >"$KARPENTER_DIR/instance-types.json"
  KUBECONFIG="$KUBECONFIG_PATH" INSTANCE_TYPES_FILE_PATH="$KARPENTER_DIR/instance-types.json" \
    METRICS_PORT="$KARPENTER_METRICS_PORT" HEALTH_PROBE_PORT="$KARPENTER_HEALTH_PORT" \
    DISABLE_LEADER_ELECTION=true \
    spawn karpenter karpenter
  wait_for karpenter 60 karpenter_ready
}
karpenter_ready() { curl -fsS --max-time 2 "http://$H:$KARPENTER_HEALTH_PORT/readyz"; }

# ---------------------------------------------------------------- RabbitMQ

rabbitmq_env() {
  export HOME="$RUN_DIR/rabbitmq" # the Erlang cookie lives here, not in the user's home
  export RABBITMQ_NODENAME=diffleet@localhost
  export RABBITMQ_NODE_IP_ADDRESS="$H" RABBITMQ_NODE_PORT="$RABBITMQ_PORT" RABBITMQ_DIST_PORT
  export ERL_EPMD_PORT="$RABBITMQ_EPMD_PORT" ERL_EPMD_ADDRESS="$H"
  export RABBITMQ_MNESIA_BASE="$RUN_DIR/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$LOG_DIR/rabbitmq"
  export RABBITMQ_CONFIG_FILE="$RUN_DIR/rabbitmq/rabbitmq.conf"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$RUN_DIR/rabbitmq/enabled_plugins"
  export RABBITMQ_PID_FILE="$RUN_DIR/rabbitmq/beam.pid"
}

start_epmd() {
  (rabbitmq_env && spawn epmd epmd -address "$H" -port "$RABBITMQ_EPMD_PORT")
}

start_rabbitmq() {
  [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || die "RabbitMQ not installed: run 'make setup' first"
  mkdir -p "$RUN_DIR/rabbitmq" "$LOG_DIR/rabbitmq"
  # The default vhost and user are created on first boot, so no rabbitmqctl round trips.
  cat >"$RUN_DIR/rabbitmq/rabbitmq.conf" <<EOF
listeners.tcp.1 = $H:$RABBITMQ_PORT
management.tcp.ip = $H
management.tcp.port = $RABBITMQ_MANAGEMENT_PORT
default_vhost = $RABBITMQ_VHOST
default_user = $RABBITMQ_USER
default_pass = $RABBITMQ_PASSWORD
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
loopback_users = none
disk_free_limit.absolute = 50MB
log.console = true
log.file = false
EOF
  echo '[rabbitmq_management].' >"$RUN_DIR/rabbitmq/enabled_plugins"
  (rabbitmq_env && spawn rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server)
}
rabbitmq_healthy() {
  curl -fsS --max-time 3 -u "$RABBITMQ_USER:$RABBITMQ_PASSWORD" \
    "http://$H:$RABBITMQ_MANAGEMENT_PORT/api/aliveness-test/$RABBITMQ_VHOST" | grep -q '"ok"'
}

# ---------------------------------------------------------------- PostgreSQL

PG_BIN="/usr/lib/postgresql/$POSTGRESQL_MAJOR/bin"
# PostgreSQL refuses to run as root; as root the stack runs it as the postgres user.
as_pg_owner() {
  if [[ $EUID -eq 0 ]]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi
}

# The data directory must be reachable by the postgres user; when the checkout lives
# somewhere that user cannot enter, the data goes to /var/tmp, linked from .diffleet/run.
pg_data_dir() {
  local dir="$RUN_DIR/postgres"
  if [[ $EUID -eq 0 && ! -L "$dir" && ! -d "$dir" ]]; then
    mkdir -p "$RUN_DIR"
    if ! setpriv --reuid=postgres --regid=postgres --init-groups -- test -x "$RUN_DIR"; then
      local elsewhere
      elsewhere="/var/tmp/diffleet-postgres-$(echo "$ROOT" | sha256sum | cut -c1-12)"
      mkdir -p "$elsewhere" && ln -sfn "$elsewhere" "$dir"
    fi
  fi
  # The resolved path: the postgres user may not be able to follow the link itself.
  readlink -f "$dir"
}

start_postgres() {
  [[ -x "$PG_BIN/postgres" ]] || die "PostgreSQL $POSTGRESQL_MAJOR not installed: run 'make setup' first"
  local dir data
  dir="$(pg_data_dir)"
  data="$dir/data"
  if [[ ! -f "$data/PG_VERSION" ]]; then
    log "initialising PostgreSQL data directory"
    mkdir -p "$dir"
    [[ $EUID -eq 0 ]] && chown -R postgres: "$dir/"
    as_pg_owner "$PG_BIN/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >>"$LOG_DIR/postgres.log" 2>&1
    cat >"$data/pg_hba.conf" <<EOF
host all postgres $H/32 trust
host all all $H/32 scram-sha-256
EOF
    [[ $EUID -eq 0 ]] && chown postgres: "$data/pg_hba.conf"
  fi
  # A postmaster killed by SIGKILL leaves its lock file; PostgreSQL removes it itself unless
  # the pid in it still answers `kill -0`, as an unreaped zombie does.
  local lock="$data/postmaster.pid"
  if ! is_running postgres && [[ -f "$lock" ]] && ! alive "$(head -n1 "$lock")"; then
    rm -f "$lock"
  fi
  local owner=()
  [[ $EUID -eq 0 ]] && owner=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  spawn postgres "${owner[@]}" "$PG_BIN/postgres" -D "$data" \
    -c listen_addresses="$H" -c port="$POSTGRES_PORT" -c unix_socket_directories= \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200
}
psql_admin() { psql -X -q -h "$H" -p "$POSTGRES_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
postgres_healthy() { psql_admin -tAc 'select 1'; }

ensure_database() {
  psql_admin -tAc "select 1 from pg_roles where rolname = '$POSTGRES_USER'" | grep -q 1 ||
    psql_admin -c "create role $POSTGRES_USER login password '$POSTGRES_PASSWORD'"
  psql_admin -tAc "select 1 from pg_database where datname = '$POSTGRES_DB'" | grep -q 1 ||
    psql_admin -c "create database $POSTGRES_DB owner $POSTGRES_USER"
}

# ---------------------------------------------------------------- Prometheus

PROMETHEUS_DIR="$RUN_DIR/prometheus"

# The pods' targets for Prometheus, in a file_sd file: Debian's Prometheus has no Kubernetes
# discovery, hack/prometheus_sd.py lists the pods that ask to be scraped.
start_prometheus_sd() {
  mkdir -p "$PROMETHEUS_DIR/targets"
  (
    cd "$ROOT"
    KUBECONFIG="$KUBECONFIG_PATH" spawn prometheus-sd "$ROOT/.venv/bin/python" \
      -m hack.prometheus_sd --out "$PROMETHEUS_DIR/targets/pods.json"
  )
}

# Scrapes the pods (start_prometheus_sd) and the processes listed under
# $PROMETHEUS_DIR/targets/processes, and evaluates the chart's rules; keeps 6 hours of data.
start_prometheus() {
  require_tool prometheus
  mkdir -p "$PROMETHEUS_DIR/data" "$PROMETHEUS_DIR/targets/processes"
  sed -e "s|@LISTEN_ADDRESS@|$H:$PROMETHEUS_PORT|" \
    -e "s|@RULES_FILE@|$ROOT/charts/diffleet/files/prometheus-rules.yaml|" \
    -e "s|@TARGETS_DIR@|$PROMETHEUS_DIR/targets|" \
    "$ROOT/hack/prometheus.yaml.tmpl" >"$PROMETHEUS_DIR/prometheus.yaml"
  printf '[{"targets": ["%s:%s"], "labels": {"component": "karpenter"}}]\n' \
    "$H" "$KARPENTER_METRICS_PORT" >"$PROMETHEUS_DIR/targets/processes/stack.json"
  spawn prometheus prometheus --config.file "$PROMETHEUS_DIR/prometheus.yaml" \
    --web.listen-address "$H:$PROMETHEUS_PORT" --storage.tsdb.path "$PROMETHEUS_DIR/data" \
    --storage.tsdb.retention.time 6h
}
prometheus_ready() { curl -fsS --max-time 2 "http://$H:$PROMETHEUS_PORT/-/ready"; }

# ---------------------------------------------------------------- OpenTelemetry Collector

# Receives the platform's traces (OTLP over HTTP, the OTEL_EXPORTER_OTLP_ENDPOINT of `make
# env`) and writes them to .diffleet/traces/traces.jsonl (hack/otelcol.yaml).
start_otel_collector() {
  require_tool otelcol-diffleet
  mkdir -p "$STATE_DIR/traces"
  OTEL_COLLECTOR_ENDPOINT="$H:$OTEL_COLLECTOR_PORT" OTEL_TRACES_FILE="$STATE_DIR/traces/traces.jsonl" \
    spawn otel-collector otelcol-diffleet --config "$ROOT/hack/otelcol.yaml"
}
# It has no health endpoint of its own: its OTLP receiver answering HTTP (405 to a GET).
otel_collector_ready() {
  curl -sS --max-time 2 -o /dev/null "http://$H:$OTEL_COLLECTOR_PORT/v1/traces"
}

# ---------------------------------------------------------------- MinIO (S3)

start_minio() {
  require_tool minio
  mkdir -p "$RUN_DIR/minio"
  MINIO_ROOT_USER="$S3_ACCESS_KEY" MINIO_ROOT_PASSWORD="$S3_SECRET_KEY" MINIO_REGION_NAME="$S3_REGION" \
    MINIO_UPDATE=off MINIO_BROWSER=off \
    spawn minio minio server --quiet --address "$H:$S3_PORT" "$RUN_DIR/minio"
}
minio_healthy() { curl -fsS --max-time 2 "http://$H:$S3_PORT/minio/health/live"; }

ensure_buckets() {
  local venv_python="$ROOT/.venv/bin/python"
  [[ -x "$venv_python" ]] || die "the Python environment is missing: run 'make setup' first"
  eval "$(print_env)"
  # shellcheck disable=SC2086 # S3_BUCKETS is a space-separated list
  "$venv_python" "$ROOT/hack/s3_buckets.py" $S3_BUCKETS
}

# ---------------------------------------------------------------- platform

helm_local() { helm --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# The Secret that hack/values-local.yaml names: the stack's credentials, the committed
# development values, which the platform accepts in development mode only.
ensure_platform_secret() {
  (
    eval "$(print_env)"
    local jwt webhook
    read -r jwt webhook < <("$ROOT/.venv/bin/python" -c 'from diffleet_core import settings as s
print(s.DEVELOPMENT_JWT_SECRET, s.DEVELOPMENT_WEBHOOK_SECRET)')
    kubectl_admin create secret generic diffleet-local -n "$RELEASE_NAMESPACE" \
      --from-literal=amqpUrl="$DIFFLEET_AMQP_URL" --from-literal=databaseUrl="$DIFFLEET_DATABASE_URL" \
      --from-literal=jwtSecret="$jwt" --from-literal=webhookSecret="$webhook" \
      --from-literal=accessKeyId="$S3_ACCESS_KEY" --from-literal=secretAccessKey="$S3_SECRET_KEY" \
      --dry-run=client -o yaml | kubectl_admin apply -f - >/dev/null
  )
}

# The values that come from hack/stack.env: addresses, ports, and the demo's GPUPool.
local_values() {
  cat <<EOF
endpoints:
  rabbitmqManagementUrl: http://$H:$RABBITMQ_MANAGEMENT_PORT
  s3: {endpointUrl: "http://$H:$S3_PORT", region: $S3_REGION}
telemetry: {otlpEndpoint: "http://$H:${OTEL_COLLECTOR_PORT:-22318}"}
operator: {metricsPort: $OPERATOR_METRICS_PORT, healthPort: $OPERATOR_HEALTH_PORT}
api: {service: {nodePort: $API_PORT}}
# The demo's worker: GPUPool $GPU_WORKER_POOL, one real diffusers worker on the CPU (fp32),
# on a static kwok node of its pool.
gpuPools:
- name: $GPU_WORKER_POOL
  gpuType: $GPU_WORKER_POOL
  vramGiB: 16
  minReplicas: 1
  maxReplicas: 1
  drainSeconds: 60
  template:
    env:
    - {name: DIFFLEET_WORKER_METRICS_PORT, value: "$GPU_WORKER_METRICS_PORT"}
    # Relative to the checkout, where the pod runner runs its pods.
    - {name: DIFFLEET_WORKER_CACHE_DIR, value: .diffleet/worker-cache/$GPU_WORKER_POOL}
    - {name: DIFFLEET_WORKER_DISK_BUDGET_BYTES, value: "$((4 * 1024 ** 3))"}
    - {name: DIFFLEET_WORKER_HOT_BUDGET_BYTES, value: "$((2 * 1024 ** 3))"}
    # OpenMP threads that spin while waiting starve the stack's other processes.
    - {name: OMP_WAIT_POLICY, value: PASSIVE}
EOF
}

# The objects of manifests/rbac and manifests/styles that up-infra applied are the chart's
# own (its render for this release): they become the release's, so that Helm does not
# refuse to own them.
adopt_rbac() {
  local dir
  for dir in rbac styles; do
    kubectl_admin annotate --overwrite -f "$ROOT/manifests/$dir/" \
      "meta.helm.sh/release-name=$RELEASE" "meta.helm.sh/release-namespace=$RELEASE_NAMESPACE" >/dev/null
    kubectl_admin label --overwrite -f "$ROOT/manifests/$dir/" app.kubernetes.io/managed-by=Helm >/dev/null
  done
}

# The release: installed, or upgraded in place (unchanged values change nothing, so a
# running platform is not rolled); then the API through its node port and the demo's worker.
start_platform() {
  require_tool helm
  ensure_platform_secret
  adopt_rbac
  log "helm upgrade --install $RELEASE (namespace $RELEASE_NAMESPACE)"
  if ! helm_local upgrade --install "$RELEASE" "$CHART" -n "$RELEASE_NAMESPACE" \
    -f "$ROOT/hack/values-local.yaml" -f <(local_values) --wait --timeout 5m >/dev/null; then
    kubectl_admin get pods -n "$RELEASE_NAMESPACE" -o wide >&2 || true
    die "the release is not ready; pods' logs: $LOG_DIR/pods/"
  fi
  wait_for pod-runner 60 api_ready
  wait_for pod-runner 300 gpu_worker_healthy
}
api_ready() { curl -fsS --max-time 5 "http://$H:$API_PORT/readyz"; }
# The t4 worker's /metrics, on its pod's IP.
gpu_worker_healthy() {
  local ip
  ip="$(kubectl_admin get pods -n "$RELEASE_NAMESPACE" -l "diffleet.io/gpupool=$GPU_WORKER_POOL" \
    -o jsonpath='{.items[0].status.podIP}' 2>/dev/null)"
  [[ -n "$ip" ]] && curl -fsS --max-time 2 "http://$ip:$GPU_WORKER_METRICS_PORT/metrics"
}

operator_ready() {
  local ready
  ready="$(kubectl_admin get deployment "$RELEASE-operator" -n "$RELEASE_NAMESPACE" \
    -o jsonpath='{.status.readyReplicas}' 2>/dev/null)"
  [[ "${ready:-0}" -gt 0 ]]
}

# Without its operator, a GPUPool's finalizer would stay: nobody else removes it.
drop_pool_finalizer() {
  kubectl_admin patch gpupool "$GPU_WORKER_POOL" --type merge \
    -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
}

# Deleting the demo's GPUPool first drains its worker (the operator's finalizer, while the
# operator runs). Then the release goes without its drain hook (nothing else runs here);
# a GPUPool still there has lost its operator, so its finalizer goes too. The RBAC of
# manifests/rbac comes back for the tests' own operators and workers, and the StylePresets
# of manifests/styles for their jobs. Bounded to about a minute (a test session waits for
# it).
stop_platform() {
  helm_local status "$RELEASE" -n "$RELEASE_NAMESPACE" >/dev/null 2>&1 || return 0
  if operator_ready; then
    log "deleting GPUPool $GPU_WORKER_POOL"
    kubectl_admin delete gpupool "$GPU_WORKER_POOL" --ignore-not-found --timeout=25s \
      >/dev/null 2>&1 || true
  fi
  drop_pool_finalizer
  log "helm uninstall $RELEASE"
  helm_local uninstall "$RELEASE" -n "$RELEASE_NAMESPACE" --no-hooks --wait --timeout 25s >/dev/null ||
    log "helm uninstall: not everything was gone within 25s"
  drop_pool_finalizer
  apply_rbac
  apply_styles
}

# ---------------------------------------------------------------- commands

# Fails early, naming the port, when a process this checkout did not start holds one of
# the stack's ports (typically a stack started from another clone).
check_ports_free() {
  local key port name
  for name in "${INFRA[@]}"; do is_running "$name" && return 0; done
  for key in $(compgen -v | grep '_PORT$'); do
    port="${!key}"
    if (exec 3<>"/dev/tcp/$H/$port") 2>/dev/null; then
      die "port $port ($key) is in use by a process this checkout did not start; run 'make down' where it was started, or change hack/stack.env"
    fi
  done
}

up_infra() {
  local started=$SECONDS
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  check_ports_free
  # Independent services start together; each is then awaited in dependency order.
  start_etcd
  start_epmd
  start_rabbitmq
  start_postgres
  start_minio
  start_otel_collector
  wait_for etcd 30 etcd_healthy
  start_kube_apiserver
  wait_for kube-apiserver 90 apiserver_ready
  start_kube_controller_manager
  start_kube_scheduler
  start_kwok
  wait_for kube-controller-manager 60 controller_manager_healthy
  wait_for kube-scheduler 60 scheduler_healthy
  wait_for kwok 60 kwok_healthy
  apply_cluster_objects
  start_pod_runner
  start_prometheus_sd
  start_prometheus
  wait_for kwok 60 nodes_ready
  start_karpenter
  wait_for postgres 60 postgres_healthy
  ensure_database
  wait_for minio 60 minio_healthy
  ensure_buckets
  wait_for rabbitmq 120 rabbitmq_healthy
  wait_for prometheus 60 prometheus_ready
  wait_for otel-collector 30 otel_collector_ready
  log "infrastructure up in $((SECONDS - started))s; 'make env' prints how to reach it"
}

up() {
  up_infra
  local started=$SECONDS
  start_platform
  log "platform up in $((SECONDS - started))s: release $RELEASE in $RELEASE_NAMESPACE (pods' logs in $LOG_DIR/pods)"
}

down() {
  # Clients first, so the servers they use see them leave; then everything else at once.
  stop_platform
  # The pod runner too: its workers drain and release their Leases while the API is up.
  stop pod-runner
  # RabbitMQ before epmd: an Erlang node that outlives its epmd starts a daemon of its own,
  # outside every process group, which then holds the port.
  stop rabbitmq
  stop kwok-scale "${INFRA[@]}"
  stop_stray_epmd
  log "stack stopped"
}

# An epmd daemon that this stack's RabbitMQ started (its environment names the stack's
# RabbitMQ directory) and that still holds the stack's epmd port.
stop_stray_epmd() {
  local pid
  for pid in $(ss -H -ltnp "sport = :$RABBITMQ_EPMD_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -q "=$RUN_DIR/rabbitmq"; then
      log "stopping a stray epmd (pid $pid)"
      kill "$pid" 2>/dev/null || true
    fi
  done
}

# restart NAME...: stops and starts single processes of a running stack (kwok after a change
# of its stages, the pod runner after a change of its code).
restart() {
  local name
  for name in "$@"; do
    stop "$name"
    "start_${name//-/_}"
  done
}

# One line a process of the infrastructure and a component of the release (NAME running|
# stopped ...), then the release namespace's pods, indented.
status() {
  local name rc=0
  for name in "${INFRA[@]}"; do
    if is_running "$name"; then
      printf '%-26s running  pid %s\n' "$name" "$(cat "$(pid_file "$name")")"
    else
      printf '%-26s stopped\n' "$name"
      rc=1
    fi
  done
  local -A checks=([operator]=operator_ready [api]=api_ready [gpu-worker]=gpu_worker_healthy)
  local -A what=([operator]="Deployment $RELEASE-operator" [api]="$H:$API_PORT (Service $RELEASE-api)"
    [gpu-worker]="pod of GPUPool $GPU_WORKER_POOL")
  for name in "${PLATFORM[@]}"; do
    if is_running kube-apiserver && "${checks[$name]}" >/dev/null 2>&1; then
      printf '%-26s running  %s\n' "$name" "${what[$name]}"
    else
      printf '%-26s stopped\n' "$name"
      rc=1
    fi
  done
  if is_running kube-apiserver; then
    kubectl_admin get pods -n "$RELEASE_NAMESPACE" -o wide 2>/dev/null | sed 's/^/  /' || true
  fi
  return "$rc"
}

# The exports of `make env`. The stack's credentials are the committed development values,
# which the platform refuses outside development mode: the exports turn it on.
print_env() {
  local amqp="amqp://$RABBITMQ_USER:$RABBITMQ_PASSWORD@$H:$RABBITMQ_PORT/$RABBITMQ_VHOST"
  local dsn="postgresql://$POSTGRES_USER:$POSTGRES_PASSWORD@$H:$POSTGRES_PORT/$POSTGRES_DB"
  cat <<EOF
export PATH="$BIN_DIR:$ROOT/.venv/bin:\$PATH"
export VIRTUAL_ENV="$ROOT/.venv"
export KUBECONFIG="$KUBECONFIG_PATH"
export AWS_ENDPOINT_URL_S3="http://$H:$S3_PORT"
export AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY"
export AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY"
export AWS_DEFAULT_REGION="$S3_REGION"
export DIFFLEET_AMQP_URL="$amqp"
export DIFFLEET_RABBITMQ_MANAGEMENT_URL="http://$H:$RABBITMQ_MANAGEMENT_PORT"
export DIFFLEET_DATABASE_URL="$dsn"
export DIFFLEET_API_URL="http://$H:$API_PORT"
export OTEL_EXPORTER_OTLP_ENDPOINT="http://$H:$OTEL_COLLECTOR_PORT"
export PGHOST="$H" PGPORT="$POSTGRES_PORT" PGUSER="$POSTGRES_USER" PGPASSWORD="$POSTGRES_PASSWORD" PGDATABASE="$POSTGRES_DB"
export DIFFLEET_DEVELOPMENT_MODE=true
EOF
}

case "${1:-}" in
  up-infra) up_infra ;;
  up-karpenter) start_karpenter ;;
  up) up ;;
  down) down ;;
  down-platform) stop_platform ;;
  status) status ;;
  env) print_env ;;
  kubeconfig) echo "$KUBECONFIG_PATH" ;;
  restart) shift && restart "$@" ;;
  up-scale) up_scale "$2" ;;
  down-scale) down_scale ;;
  *) die "usage: $0 up-infra|up|up-karpenter|down|down-platform|status|env|kubeconfig|restart NAME...|up-scale POOLS|down-scale" ;;
esac
