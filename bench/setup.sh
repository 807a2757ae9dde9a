#!/usr/bin/env bash
# Measures the figures of the foundation: cold and warm `make setup`, `make up` to
# all-healthy, and the resident memory of the whole stack at idle. Writes them to
# bench/results/setup.md.
#
# The cold run uses a fresh clone with empty caches of its own (Go modules, Go build,
# uv, the diffleet tool cache), so it measures a first `make setup` on this machine
# without touching the real caches; Debian packages, once installed, are not removed.
# Stop any running stack first (`make down`): the clone's stack uses the same ports.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/diffleet-bench.XXXXXX)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

git clone --quiet "$ROOT" "$work/clone"
cd "$work/clone"
export DIFFLEET_CACHE="$work/cache" GOMODCACHE="$work/gomod" GOCACHE="$work/gobuild" UV_CACHE_DIR="$work/uv"

# timed COMMAND...: runs it (output to the log) and prints its wall time in seconds.
timed() {
  local start end
  start=$(date +%s.%N)
  "$@" >>"$work/bench.log" 2>&1 || { tail -n 30 "$work/bench.log" >&2; exit 1; }
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }'
}

echo "cold make setup (empty caches; takes a while)..." >&2
cold=$(timed make setup)
echo "warm make setup..." >&2
warm=$(timed make setup)
echo "make up (warm, from stopped)..." >&2
up=$(timed make up)

# Idle: let start-up work (controllers' first syncs, RabbitMQ's plugin start) settle.
sleep 60
rss_lines=""
total_kib=0
for pidfile in .diffleet/run/*.pid; do
  name="$(basename "$pidfile" .pid)"
  kib="$(ps -o rss= -g "$(cat "$pidfile")" | awk '{s += $1} END {print s + 0}')"
  total_kib=$((total_kib + kib))
  rss_lines+="| $name | $((kib / 1024)) |"$'\n'
done
make down >>"$work/bench.log" 2>&1

cat >"$ROOT/bench/results/setup.md" <<EOF
# Setup and stack figures

Measured by \`bench/setup.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB.
Cold means empty Go module, Go build, uv and diffleet caches in a fresh clone
(Debian packages already installed).

| step | seconds |
|---|---|
| cold \`make setup\` | $cold |
| warm \`make setup\` | $warm |
| \`make up\` to all-healthy (warm, from stopped) | $up |

Resident memory at idle (60 s after \`make up\`), per process group:

| process | RSS MiB |
|---|---|
${rss_lines}| **total** | **$((total_kib / 1024))** |

Reproduce: \`make down && make bench-setup\`.
EOF
cat "$ROOT/bench/results/setup.md"
