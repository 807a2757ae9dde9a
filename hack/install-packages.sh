#!/usr/bin/env bash
# Installs the Debian packages of the local stack (RabbitMQ, PostgreSQL, Prometheus with
# promtool, openssl) and of the console's browser tests (Chromium) when missing. Their own system services are kept from starting: the
# stack runs private instances on its own ports (hack/stack.sh), never the distribution's
# defaults.
set -euo pipefail
LOG_TAG=packages
source "$(dirname "$0")/lib.sh"

packages=("$RABBITMQ_PACKAGE" "postgresql-$POSTGRESQL_MAJOR" prometheus openssl curl chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
((${#missing[@]})) || { log "Debian packages present: ${packages[*]}"; exit 0; }

sudo=()
[[ $EUID -eq 0 ]] || sudo=(sudo)
log "installing Debian packages: ${missing[*]}"
# policy-rc.d exit 101 tells invoke-rc.d not to start the packages' system services.
policy=/usr/sbin/policy-rc.d
created_policy=false
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod +x "$policy"
  created_policy=true
fi
cleanup() { if $created_policy; then "${sudo[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
log "installed: ${missing[*]}"
