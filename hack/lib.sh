# Shared paths and helpers for the hack/ scripts. Source it; do not run it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/versions.env
source "$ROOT/hack/versions.env"

# Slow artefacts (built binaries), keyed by version, shared by every clone on this machine.
DIFFLEET_CACHE="${DIFFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/diffleet}"
# Per-checkout, git-ignored: tool links, the running stack's data, logs and pid files.
STATE_DIR="${DIFFLEET_STATE_DIR:-$ROOT/.diffleet}"
BIN_DIR="$STATE_DIR/bin"
RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/logs"

export GOTOOLCHAIN=local
export PATH="$BIN_DIR:$PATH"
# Go's standard install location, for shells whose PATH lacks it.
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="$PATH:/usr/local/go/bin"
fi

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "${LOG_TAG:-hack}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Runs a command and prints a line every minute to the caller's stderr (even when the
# command's output goes to a log file), so a cold build of many minutes shows it is alive.
exec {HEARTBEAT_FD}>&2
with_heartbeat() {
  local what="$1"; shift
  local started=$SECONDS
  ( while sleep 60; do log "$what: still working ($(( (SECONDS - started) / 60 )) min)" 2>&"$HEARTBEAT_FD"; done ) &
  local ticker=$!
  local rc=0
  "$@" || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  return "$rc"
}
