#!/usr/bin/env bash
# Installs the pinned uv (from PyPI) into the version-keyed cache and links it into
# .diffleet/bin. uv then builds the project's .venv from uv.lock.
set -euo pipefail
LOG_TAG=uv
source "$(dirname "$0")/lib.sh"

dest="$DIFFLEET_CACHE/tools/uv-$UV_VERSION"
if [[ ! -x "$dest/bin/uv" ]]; then
  log "installing uv $UV_VERSION from PyPI"
  rm -rf "$dest"
  python3 -m venv "$dest"
  "$dest/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
mkdir -p "$BIN_DIR"
ln -sfn "$dest/bin/uv" "$BIN_DIR/uv"
