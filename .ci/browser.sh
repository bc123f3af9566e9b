#!/usr/bin/env bash
# Prepares the browser end-to-end test (cmd/guacproxy/browser_test.go):
# installs Debian's chromium if no chromium is on PATH, and installs the
# pinned guacamole-common-js into cmd/guacproxy/testdata/browser/node_modules
# from its package-lock.json.
#
# Usage: .ci/browser.sh
#
# Afterwards run the test with GUACPROXY_REQUIRE_BROWSER=1 so that a missing
# browser or library fails it instead of skipping it:
#
#   GUACPROXY_REQUIRE_BROWSER=1 go test ./cmd/guacproxy -run Browser -v
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'browser.sh: %s\n' "$*" >&2; }

if command -v chromium >/dev/null 2>&1; then
	log "chromium present: $(chromium --version 2>/dev/null || echo unknown version)"
else
	log "installing chromium from Debian"
	sudo=""
	if [[ $(id -u) -ne 0 ]]; then
		sudo="sudo"
	fi
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
	log "installed: $(chromium --version)"
fi

if ! command -v npm >/dev/null 2>&1; then
	log "npm is missing; install Node.js (Debian: apt-get install nodejs npm)"
	exit 1
fi
log "npm ci in cmd/guacproxy/testdata/browser"
(cd cmd/guacproxy/testdata/browser && npm ci --no-audit --no-fund --ignore-scripts)
