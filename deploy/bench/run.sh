#!/usr/bin/env bash
# Measures guacproxy side by side with the stand-in Guacamole it proxies to,
# a bare httputil.ReverseProxy, a tuned one and nginx, then its cold path and
# its shutdown revocation. Everything runs on this machine and talks only to
# 127.0.0.1. See deploy/bench/README.md.
#
# Usage: bash deploy/bench/run.sh [guacbench run flags...]
# Results go to stdout and, with the logs, configs and CPU profile, to a new
# directory under /tmp (printed at the start).
set -euo pipefail

cd "$(dirname "$0")/../.."

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing ${missing[*]} from Debian" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
nginx_bin=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)

out=$(mktemp -d /tmp/guacbench.XXXXXX)
go build -o "$out/guacproxy" ./cmd/guacproxy
go build -o "$out/guacbench" ./cmd/guacbench

{
	echo "machine: $(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
	echo "tools: $(go version | cut -d' ' -f3), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)," \
		"$("$nginx_bin" -v 2>&1 | cut -d' ' -f3)"
	echo "guacproxy: $(git describe --always --dirty 2>/dev/null || echo unknown)"
	echo "command: bash deploy/bench/run.sh $*"
	echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/results.md"

"$out/guacbench" run --guacproxy "$out/guacproxy" --wrk wrk --nginx "$nginx_bin" \
	--dir "$out" --profile "$out/guacproxy.cpu.pprof" "$@" | tee -a "$out/results.md"

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/results.md"
profile() { go tool pprof "$@" "$out/guacbench" "$out/guacproxy.cpu.pprof" 2>/dev/null; }
profile -top -nodecount 40 >"$out/profile-flat.txt"
profile -top -cum -nodecount 60 >"$out/profile-cum.txt"
echo
echo "CPU profile of guacproxy under wrk: $out/guacproxy.cpu.pprof"
echo "(go tool pprof -http=: $out/guacbench $out/guacproxy.cpu.pprof). Heaviest by own time:"
sed -n '6,26p' "$out/profile-flat.txt"
