#!/usr/bin/env bash
# Builds the Go tools of the local stack from the Go module proxy, pinned by
# hack/versions.env, into $DIFFLEET_CACHE/tools/<name>-<version>, and links them
# into .diffleet/bin. A tool already in the cache is only linked (seconds).
#
# Modules with replace directives (k8s.io/kubernetes, etcd) cannot be `go install`ed;
# each tool is built from a throwaway wrapper module that requires the release and,
# for Kubernetes, points every staging module (v0.0.0 in its go.mod) at the
# matching published v0.X release.
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

main() {
  local tools=("$@")
  ((${#tools[@]})) || tools=(kubernetes etcd kwok helm minio karpenter)
  local t
  for t in "${tools[@]}"; do "$t"; done
}

main "$@"
