#!/usr/bin/env bash
# Prepares the Python client test (cmd/guacproxy/pyclient_test.go): creates a
# virtualenv and installs the pinned, unmodified Guacamole client from
# cmd/guacproxy/testdata/pyclient/requirements.txt into it. A virtualenv that
# already holds exactly those packages is reused as it is.
#
# Usage: .ci/pyclient.sh
#
# GUACPROXY_PYCLIENT_VENV chooses the virtualenv (default
# /tmp/guacproxy-pyclient-venv); PYTHON chooses the interpreter that creates
# it (default python3). On success the only output is the path of the
# virtualenv's python, for GUACPROXY_PYCLIENT_PYTHON:
#
#   GUACPROXY_PYCLIENT_PYTHON=$(.ci/pyclient.sh) GUACPROXY_REQUIRE_PYCLIENT=1 \
#     go test ./cmd/guacproxy -run PyClient -v
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv="${GUACPROXY_PYCLIENT_VENV:-/tmp/guacproxy-pyclient-venv}"
requirements="cmd/guacproxy/testdata/pyclient/requirements.txt"
python="$venv/bin/python"

log() { printf 'pyclient.sh: %s\n' "$*" >&2; }

# pinned prints the requirements as "name==version" lines, normalised the way
# pip freeze writes them, sorted.
pinned() {
	sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$requirements" |
		tr '[:upper:]_' '[:lower:]-' | sort
}

# installed prints what the virtualenv holds, in the same form.
installed() {
	"$python" -m pip freeze --disable-pip-version-check 2>/dev/null |
		tr '[:upper:]_' '[:lower:]-' | sort
}

if [[ -x "$python" ]] && [[ "$(installed)" == "$(pinned)" ]]; then
	printf '%s\n' "$python"
	exit 0
fi

if [[ ! -x "$python" ]]; then
	# Debian splits ensurepip off into python3-venv; a fresh machine may
	# lack it.
	if ! out=$("${PYTHON:-python3}" -m venv "$venv" 2>&1) && [[ $(id -u) -eq 0 ]]; then
		rm -rf "$venv"
		log "installing python3-venv from Debian"
		apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
		out=$("${PYTHON:-python3}" -m venv "$venv" 2>&1)
	fi
	if [[ ! -x "$python" ]]; then
		rm -rf "$venv"
		log "cannot create a virtualenv at $venv (Debian: apt-get install python3-venv)"
		printf '%s\n' "$out" >&2
		exit 1
	fi
fi

out=$("$python" -m pip install --quiet --disable-pip-version-check \
	--no-input --requirement "$requirements" 2>&1) || {
	log "pip install -r $requirements failed"
	printf '%s\n' "$out" >&2
	exit 1
}

if [[ "$(installed)" != "$(pinned)" ]]; then
	log "$venv holds packages other than the pinned ones:"
	diff <(pinned) <(installed) >&2 || true
	log "remove it (rm -rf $venv) and run this script again"
	exit 1
fi
printf '%s\n' "$python"
