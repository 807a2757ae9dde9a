#!/usr/bin/env bash
# Builds KEDA (operator and metrics adapter), pinned by hack/versions.env, into
# $DIFFLEET_CACHE/tools/keda-<version> with its CRDs, and links them into .diffleet/bin.
# Only `make bench-autoscale` needs it (KEDA is the yardstick of bench/autoscale.py),
# so `make setup` never builds it. A cached build is only linked (seconds).
#
# KEDA's go.mod has a replace line, so `go install` is refused: it is built from a
# throwaway wrapper module that requires the release and copies that replace.
set -euo pipefail
LOG_TAG=build-keda
source "$(dirname "$0")/lib.sh"

export CGO_ENABLED=0
MODULE=github.com/kedacore/keda/v2

build() {
  local dest="$DIFFLEET_CACHE/tools/keda-$KEDA_VERSION" work
  work="$dest.build"
  rm -rf "$work" && mkdir -p "$work/bin"
  log "keda $KEDA_VERSION: cold build (about 10 min per binary on 2 cores), log in $work/build.log"
  (
    cd "$work"
    printf 'module diffleet.local/tools/keda\n\ngo 1.26\n' >go.mod
    local gomod r
    gomod="$(go mod download -json "$MODULE@$KEDA_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
    # `replace A v => B v'` lines of KEDA's go.mod, as go mod edit's A@v=B@v'.
    for r in $(awk '$1 == "replace" && $4 == "=>" {print $2 "@" $3 "=" $5 "@" $6}' "$gomod"); do
      go mod edit -replace="$r"
    done
    go get "$MODULE@$KEDA_VERSION" >>build.log 2>&1
    local ldflags="-s -w -X $MODULE/version.Version=$KEDA_VERSION"
    local cmd
    for cmd in operator adapter; do
      log "keda: building keda-$cmd"
      with_heartbeat "keda-$cmd" go build -mod=mod -trimpath -ldflags "$ldflags" \
        -o "bin/keda-$cmd" "$MODULE/cmd/$cmd" >>build.log 2>&1
    done
    local src
    src="$(go mod download -json "$MODULE@$KEDA_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
    mkdir -p crds
    cp "$src"/config/crd/bases/*.yaml crds/
    chmod u+w crds/*
  ) || { tail -n 30 "$work/build.log" >&2; die "keda $KEDA_VERSION: build failed"; }
  rm -rf "$dest" && mv "$work" "$dest"
  touch "$dest/.complete"
  log "keda $KEDA_VERSION: built in $((SECONDS / 60)) min $((SECONDS % 60)) s"
}

main() {
  local dest="$DIFFLEET_CACHE/tools/keda-$KEDA_VERSION"
  [[ -f "$dest/.complete" ]] || build
  mkdir -p "$BIN_DIR"
  local bin
  for bin in "$dest"/bin/*; do ln -sfn "$bin" "$BIN_DIR/$(basename "$bin")"; done
  ln -sfn "$dest/crds" "$BIN_DIR/keda-crds"
}

main
