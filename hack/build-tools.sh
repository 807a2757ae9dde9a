#!/usr/bin/env bash
# Builds the Go tools of the local stack from the Go module proxy, pinned by
# hack/versions.env, into $DIFFLEET_CACHE/tools/<name>-<version>, and links them
# into .diffleet/bin. A tool already in the cache is only linked (seconds).
#
# Modules with replace directives (k8s.io/kubernetes, etcd, helm-unittest, OpenTofu)
# cannot be `go install`ed; each tool is built from a throwaway wrapper module that
# requires the release and copies its replace lines (for Kubernetes, points every staging
# module, v0.0.0 in its go.mod, at the matching published v0.X release).
set -euo pipefail
LOG_TAG=build-tools
source "$(dirname "$0")/lib.sh"

export CGO_ENABLED=0

# build_go_tool NAME VERSION MODULE LDFLAGS PACKAGE[:BINARY]... [-- REPLACE...]
build_go_tool() {
  local name="$1" version="$2" module="$3" ldflags="$4"; shift 4
  local packages=() replaces=()
  while (($#)); do
    if [[ "$1" == "--" ]]; then shift; replaces=("$@"); break; fi
    packages+=("$1"); shift
  done
  local dest="$DIFFLEET_CACHE/tools/$name-$version"
  if [[ ! -f "$dest/.complete" ]]; then
    local work="$dest.build"
    rm -rf "$work" && mkdir -p "$work/bin"
    log "$name $version: cold build (a few minutes; Kubernetes takes longest), log in $work/build.log"
    (
      cd "$work"
      printf 'module diffleet.local/tools/%s\n\ngo 1.24\n' "$name" >go.mod
      local r
      for r in "${replaces[@]}"; do go mod edit -replace="$r"; done
      go get "$module@$version" >>build.log 2>&1
      local p
      for p in "${packages[@]}"; do
        local pkg="${p%%:*}" binary="${p##*[/:]}"
        log "$name: building $binary"
        with_heartbeat "$binary" go build -mod=mod -trimpath -ldflags "$ldflags" -o "bin/$binary" "$pkg" >>build.log 2>&1
      done
    ) || { tail -n 30 "$work/build.log" >&2; die "$name $version: build failed"; }
    rm -rf "$dest" && mv "$work" "$dest"
    touch "$dest/.complete"
    log "$name $version: built"
  fi
  mkdir -p "$BIN_DIR"
  local bin
  for bin in "$dest"/bin/*; do ln -sfn "$bin" "$BIN_DIR/$(basename "$bin")"; done
}

kubernetes() {
  local v="$KUBERNETES_VERSION" minor
  minor="$(cut -d. -f2 <<<"$v")"
  local staging="0.$minor.${v##*.}"
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  local replaces=()
  local m
  for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$gomod" | sort -u); do
    replaces+=("$m=$m@v$staging")
  done
  local x=""
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    x+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    x+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  build_go_tool kubernetes "$v" k8s.io/kubernetes "-s -w$x" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl \
    -- "${replaces[@]}"
}

etcd() {
  build_go_tool etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 "-s -w" \
    go.etcd.io/etcd/server/v3:etcd go.etcd.io/etcd/etcdctl/v3:etcdctl
}

kwok() {
  build_go_tool kwok "$KWOK_VERSION" sigs.k8s.io/kwok \
    "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    sigs.k8s.io/kwok/cmd/kwok
  # The stage configs ship in the module: node initialize and heartbeat with lease,
  # pod ready, complete and delete. They become one multi-document --config file.
  local dest="$DIFFLEET_CACHE/tools/kwok-$KWOK_VERSION" src
  if [[ ! -f "$dest/stages.yaml" ]]; then
    src="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
    local f
    for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
      pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
      printf -- '---\n' && cat "$src/kustomize/stage/$f.yaml"
    done >"$dest/stages.yaml.tmp"
    mv "$dest/stages.yaml.tmp" "$dest/stages.yaml"
  fi
  ln -sfn "$dest/stages.yaml" "$BIN_DIR/kwok-stages.yaml"
}

helm() {
  local minor
  minor="$(cut -d. -f2 <<<"$KUBERNETES_VERSION")"
  build_go_tool helm "$HELM_VERSION" helm.sh/helm/v3 \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
    helm.sh/helm/v3/cmd/helm
}

minio() {
  build_go_tool minio "$MINIO_VERSION" github.com/minio/minio \
    "-s -w -X github.com/minio/minio/cmd.Version=$MINIO_RELEASE -X github.com/minio/minio/cmd.ReleaseTag=$MINIO_RELEASE" \
    github.com/minio/minio
}

karpenter() {
  build_go_tool karpenter "$KARPENTER_VERSION" sigs.k8s.io/karpenter "-s -w" \
    sigs.k8s.io/karpenter/kwok:karpenter
  # Its CRDs ship in the module (NodePool, NodeClaim; KWOKNodeClass for the kwok provider).
  local dest="$DIFFLEET_CACHE/tools/karpenter-$KARPENTER_VERSION" src
  if [[ ! -d "$dest/crds" ]]; then
    src="$(go mod download -json "sigs.k8s.io/karpenter@$KARPENTER_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
    mkdir -p "$dest/crds.tmp"
    cp "$src"/pkg/apis/crds/karpenter.sh_*.yaml "$src"/kwok/apis/crds/*.yaml "$dest/crds.tmp/"
    chmod u+w "$dest"/crds.tmp/*
    mv "$dest/crds.tmp" "$dest/crds"
  fi
  ln -sfn "$dest/crds" "$BIN_DIR/karpenter-crds"
}

kubeconform() {
  build_go_tool kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform \
    "-s -w -X main.version=$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform
}

# The one-line `replace OLD VERSION => NEW VERSION` directives of MODULE@VERSION's go.mod,
# as OLD@VERSION=NEW@VERSION arguments for build_go_tool's wrapper module.
module_replaces() {
  local gomod
  gomod="$(go mod download -json "$1" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  awk '$1 == "replace" && $4 == "=>" && NF == 6 {print $2 "@" $3 "=" $5 "@" $6}' "$gomod"
}

# helm-unittest runs as a binary (its helm plugin installer downloads from the internet).
helm_unittest() {
  local module=github.com/helm-unittest/helm-unittest replaces
  mapfile -t replaces < <(module_replaces "$module@$HELM_UNITTEST_VERSION")
  build_go_tool helm-unittest "$HELM_UNITTEST_VERSION" "$module" "-s -w" \
    "$module/cmd/helm-unittest" -- "${replaces[@]}"
}

opentofu() {
  local module=github.com/opentofu/opentofu replaces
  mapfile -t replaces < <(module_replaces "$module@$OPENTOFU_VERSION")
  build_go_tool opentofu "$OPENTOFU_VERSION" "$module" "-s -w -X $module/version.dev=no" \
    "$module/cmd/tofu" -- "${replaces[@]}"
}

tflint() {
  build_go_tool tflint "$TFLINT_VERSION" github.com/terraform-linters/tflint "-s -w" \
    github.com/terraform-linters/tflint
}

# The collector builder generates the sources of a collector from hack/otelcol-builder.yaml;
# their module is made and compiled here rather than by the builder, whose `go mod tidy`
# also wants the components' test dependencies, some of which the module proxy refuses.
# The cache key carries the manifest's hash, so a changed component list rebuilds.
otelcol() {
  local builder=go.opentelemetry.io/collector/cmd/builder
  build_go_tool otelcol-builder "$OTELCOL_VERSION" "$builder" "-s -w" "$builder:otelcol-builder"
  local manifest="$ROOT/hack/otelcol-builder.yaml"
  local dest
  dest="$DIFFLEET_CACHE/tools/otelcol-diffleet-$OTELCOL_VERSION-$(sha256sum "$manifest" | cut -c-12)"
  if [[ ! -f "$dest/.complete" ]]; then
    local work="$dest.build"
    rm -rf "$work" && mkdir -p "$work/bin"
    log "otelcol-diffleet $OTELCOL_VERSION: cold build (a few minutes), log in $work/build.log"
    (
      cd "$work"
      "$DIFFLEET_CACHE/tools/otelcol-builder-$OTELCOL_VERSION/bin/otelcol-builder" \
        --config "$manifest" --skip-get-modules --skip-compilation >>build.log 2>&1
      cd src
      go mod init diffleet.local/otelcol-diffleet >>../build.log 2>&1
      # shellcheck disable=SC2046 # one argument per component
      go get $(sed -n 's/^ *- gomod: \([^ ]*\) \(v[^ ]*\)$/\1@\2/p' "$manifest") \
        "go.opentelemetry.io/collector/otelcol@$OTELCOL_VERSION" >>../build.log 2>&1
      with_heartbeat otelcol-diffleet \
        go build -mod=mod -trimpath -ldflags "-s -w" -o ../bin/otelcol-diffleet . >>../build.log 2>&1
    ) || { tail -n 30 "$work/build.log" >&2; die "otelcol-diffleet: build failed"; }
    rm -rf "$dest" && mv "$work" "$dest"
    touch "$dest/.complete"
    log "otelcol-diffleet $OTELCOL_VERSION: built"
  fi
  ln -sfn "$dest/bin/otelcol-diffleet" "$BIN_DIR/otelcol-diffleet"
}

main() {
  local tools=("$@")
  ((${#tools[@]})) || tools=(kubernetes etcd kwok helm minio karpenter
    kubeconform helm_unittest opentofu tflint otelcol)
  local t
  for t in "${tools[@]}"; do "$t"; done
}

main "$@"
