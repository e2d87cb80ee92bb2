#!/usr/bin/env bash
# Installs the Debian packages that mixerd's integration tests and benchmarks run for real:
# redis-server, redis-sentinel and redis-tools (redis-cli) for redisquota on one server, a Redis
# Cluster and Sentinel, prometheus, nginx, h2load (nghttp2-client), wrk, postgresql (the console
# store's PostgreSQL tests start their own server with its initdb/postgres) and chromium (the
# console UI's browser tests drive it through Playwright; no browser is downloaded) and systemd
# (systemd-analyze and systemd-sysusers check the deploy/ units; nothing is started with it). Does
# nothing when they are there.
set -euo pipefail
declare -A pkg=([redis-server]=redis-server [redis-sentinel]=redis-sentinel [redis-cli]=redis-tools
  [prometheus]=prometheus [nginx]=nginx [h2load]=nghttp2-client [wrk]=wrk [chromium]=chromium
  [systemd-analyze]=systemd [systemd-sysusers]=systemd)
missing=()
for cmd in "${!pkg[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/usr/bin/$cmd" ] || missing+=("${pkg[$cmd]}")
done
# PostgreSQL's server programs are not on PATH on Debian: look for any version's initdb
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "system-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: run as root, or install them yourself: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $(printf "%s\n" "${missing[@]}" | sort -u) >/dev/null
# The packages start system-wide services; the tests start their own instances on free ports.
for svc in redis-server redis-sentinel prometheus nginx postgresql; do
  (command -v service >/dev/null && service "$svc" stop >/dev/null 2>&1) || true
done
