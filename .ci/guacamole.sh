#!/usr/bin/env bash
# Runs the Apache Guacamole web application (no guacd) on 127.0.0.1 so that
# guacproxy's tests can check their assumptions against the real server.
#
# Usage: guacamole.sh start|stop|restart|status|env
#
#   start    fetch what is missing, write GUACAMOLE_HOME, start Jetty, wait
#            until POST <base>/api/tokens logs a test user in, then print
#            `export` lines for the GUACPROXY_TEST_GUACAMOLE_* variables
#            (also saved to $STATE/env). Exit status 3 means the web
#            application archive could not be obtained: nothing was started.
#   stop     stop the server if it runs; always safe.
#   restart  stop and start again on the same port with the same home. All
#            Guacamole sessions (tokens) are lost, as with a real restart.
#   status   report whether the server runs.
#   env      print the export lines of the running server.
#
# Settings (environment):
#   GUACPROXY_GUAC_STATE    state directory (pid, home, logs);
#                           default /tmp/guacproxy-guacamole
#   GUACPROXY_GUAC_PORT     loopback port; default 18081
#   GUACPROXY_GUACAMOLE_WAR path to guacamole-1.6.0.war; if unset the war is
#                           resolved from Maven as
#                           org.apache.guacamole:guacamole:1.6.0:war
#   GUACPROXY_GUACAMOLE_BAN_JAR
#                           path to guacamole-auth-ban-1.6.0.jar; if unset it
#                           is resolved from Maven; optional either way
#   GUACPROXY_GUAC_START_TIMEOUT
#                           seconds to wait for readiness; default 180
#
# Downloads land in the local Maven repository (~/.m2), so a second start
# on the same machine fetches nothing.
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
readonly SELF
readonly STATE="${GUACPROXY_GUAC_STATE:-/tmp/guacproxy-guacamole}"
readonly GUAC_VERSION=1.6.0
readonly JETTY_VERSION="${GUACPROXY_JETTY_VERSION:-9.4.57.v20241219}"
readonly DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
readonly M2_REPO="${GUACPROXY_M2_REPO:-$HOME/.m2/repository}"
readonly START_TIMEOUT="${GUACPROXY_GUAC_START_TIMEOUT:-180}"

# Test users: name, password. Test credentials only.
readonly USERS=(
	"svc-reporting:reporting-pass"
	"svc-tool:tool-pass"
	"guacadmin:guacadmin-pass"
)

log() { printf 'guacamole.sh: %s\n' "$*" >&2; }

# port prints the port to use: the one of the last start, so that restart
# keeps it, unless GUACPROXY_GUAC_PORT says otherwise.
port() {
	if [[ -n "${GUACPROXY_GUAC_PORT:-}" ]]; then
		echo "$GUACPROXY_GUAC_PORT"
	elif [[ -s "$STATE/port" ]]; then
		cat "$STATE/port"
	else
		echo 18081
	fi
}

# m2_path prints where group:artifact:version:type lives in the local
# Maven repository.
m2_path() {
	local g="$1" a="$2" v="$3" t="$4"
	echo "$M2_REPO/${g//.//}/$a/$v/$a-$v.$t"
}

# fetch makes sure an artifact is in the local Maven repository and prints
# its path. It fails (quietly; the caller decides) when Maven cannot get it.
fetch() {
	local g="$1" a="$2" v="$3" t="$4" path
	path="$(m2_path "$g" "$a" "$v" "$t")"
	# Maven leaves a .lastUpdated file after a miss and does not ask the
	# registry again for a day; skip starting Maven for nothing as well.
	if [[ ! -s "$path" ]] && [[ -n "$(find "$path.lastUpdated" -mmin -1440 2>/dev/null)" ]]; then
		return 1
	fi
	if [[ ! -s "$path" ]]; then
		log "fetching $g:$a:$v:$t with Maven"
		if ! mvn -B -q "$DEP_PLUGIN:get" -Dtransitive=false \
			-Dmaven.repo.local="$M2_REPO" \
			-Dartifact="$g:$a:$v:$t" >"$STATE/logs/mvn-$a.log" 2>&1; then
			return 1
		fi
	fi
	[[ -s "$path" ]] && echo "$path"
}

find_war() {
	if [[ -n "${GUACPROXY_GUACAMOLE_WAR:-}" ]]; then
		[[ -s "$GUACPROXY_GUACAMOLE_WAR" ]] || {
			log "GUACPROXY_GUACAMOLE_WAR=$GUACPROXY_GUACAMOLE_WAR is not a file"
			return 1
		}
		echo "$GUACPROXY_GUACAMOLE_WAR"
		return
	fi
	fetch org.apache.guacamole guacamole "$GUAC_VERSION" war
}

find_ban_jar() {
	if [[ -n "${GUACPROXY_GUACAMOLE_BAN_JAR:-}" ]]; then
		[[ -s "$GUACPROXY_GUACAMOLE_BAN_JAR" ]] && echo "$GUACPROXY_GUACAMOLE_BAN_JAR"
		return
	fi
	fetch org.apache.guacamole guacamole-auth-ban "$GUAC_VERSION" jar
}

# write_home lays out GUACAMOLE_HOME: properties, user mapping, and the ban
# extension when one is given.
write_home() {
	local home="$STATE/home" ban_jar="$1"
	mkdir -p "$home/extensions" "$home/lib"
	rm -f "$home"/extensions/*.jar

	cat >"$home/guacamole.properties" <<-'EOF'
		# Idle minutes before an unused REST token is dropped.
		api-session-timeout: 1
		# No guacd runs; the REST API does not need it.
		guacd-hostname: 127.0.0.1
		guacd-port: 4822
	EOF

	{
		echo '<user-mapping>'
		local entry name pass
		for entry in "${USERS[@]}"; do
			name="${entry%%:*}" pass="${entry#*:}"
			cat <<-EOF
				    <authorize username="$name" password="$pass">
				        <connection name="$name-ssh">
				            <protocol>ssh</protocol>
				            <param name="hostname">127.0.0.1</param>
				            <param name="port">22</param>
				        </connection>
				        <connection name="$name-vnc">
				            <protocol>vnc</protocol>
				            <param name="hostname">127.0.0.1</param>
				            <param name="port">5901</param>
				        </connection>
				    </authorize>
			EOF
		done
		echo '</user-mapping>'
	} >"$home/user-mapping.xml"

	if [[ -n "$ban_jar" ]]; then
		cp "$ban_jar" "$home/extensions/"
	fi
}

running() {
	[[ -s "$STATE/pid" ]] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null
}

port_busy() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ready reports whether a test user can log in. It uses valid credentials on
# purpose: failed logins would count towards the ban extension's limit.
ready() {
	local url="$1" entry="${USERS[0]}" body code token
	body="$(mktemp)"
	code="$(curl -s -o "$body" -w '%{http_code}' --max-time 5 \
		-H 'Content-Type: application/x-www-form-urlencoded' \
		--data-urlencode "username=${entry%%:*}" \
		--data-urlencode "password=${entry#*:}" \
		"$url/api/tokens" || true)"
	if [[ "$code" != 200 ]]; then
		rm -f "$body"
		return 1
	fi
	token="$(sed -n 's/.*"authToken":"\([0-9A-Fa-f]*\)".*/\1/p' "$body")"
	rm -f "$body"
	if [[ -n "$token" ]]; then
		curl -s -o /dev/null --max-time 5 -X DELETE "$url/api/tokens/$token" || true
	fi
}

print_env() {
	local users
	users="$(IFS=,; echo "${USERS[*]}")"
	echo "export GUACPROXY_TEST_GUACAMOLE_URL=$(cat "$STATE/url")"
	echo "export GUACPROXY_TEST_GUACAMOLE_USERS=$users"
	echo "export GUACPROXY_TEST_GUACAMOLE_RESTART='bash $SELF restart'"
	if [[ -s "$STATE/ban" ]]; then
		echo "export GUACPROXY_TEST_GUACAMOLE_BAN=1"
	fi
}

cmd_start() {
	mkdir -p "$STATE/logs"
	if running; then
		log "already running (pid $(cat "$STATE/pid"))"
		print_env | tee "$STATE/env"
		return
	fi
	command -v java >/dev/null || { log "java not found"; return 1; }
	command -v mvn >/dev/null || { log "mvn not found"; return 1; }
	command -v curl >/dev/null || { log "curl not found"; return 1; }

	local war ban_jar jetty p url
	if [[ "${1:-}" == reuse && -s "$STATE/war" && -s "$STATE/jetty" ]]; then
		war="$(cat "$STATE/war")"
		jetty="$(cat "$STATE/jetty")"
		ban_jar="$(cat "$STATE/ban-jar" 2>/dev/null || true)"
	elif ! war="$(find_war)"; then
		log "org.apache.guacamole:guacamole:$GUAC_VERSION:war is not available" \
			"from Maven Central (log: $STATE/logs/mvn-guacamole.log); set" \
			"GUACPROXY_GUACAMOLE_WAR to a local copy of the war"
		return 3
	else
		ban_jar="$(find_ban_jar || true)"
		if ! jetty="$(fetch org.eclipse.jetty jetty-runner "$JETTY_VERSION" jar)"; then
			log "cannot fetch jetty-runner $JETTY_VERSION (see $STATE/logs/mvn-jetty-runner.log)"
			return 1
		fi
	fi
	echo "$war" >"$STATE/war"
	echo "$jetty" >"$STATE/jetty"
	echo "$ban_jar" >"$STATE/ban-jar"

	p="$(port)"
	if port_busy "$p"; then
		log "127.0.0.1:$p is already in use"
		return 1
	fi
	write_home "$ban_jar"
	rm -rf "$STATE/work" && mkdir -p "$STATE/work"
	url="http://127.0.0.1:$p/guacamole"
	echo "$p" >"$STATE/port"
	echo "$url" >"$STATE/url"
	if [[ -n "$ban_jar" ]]; then echo 1 >"$STATE/ban"; else rm -f "$STATE/ban"; fi

	GUACAMOLE_HOME="$STATE/home" nohup java \
		-Dguacamole.home="$STATE/home" \
		-Djava.io.tmpdir="$STATE/work" \
		-jar "$jetty" \
		--host 127.0.0.1 --port "$p" --path /guacamole \
		"$war" >>"$STATE/logs/jetty.log" 2>&1 </dev/null &
	echo $! >"$STATE/pid"

	local deadline=$((SECONDS + START_TIMEOUT))
	until ready "$url"; do
		if ! running; then
			log "the server exited during start; last lines of $STATE/logs/jetty.log:"
			tail -n 30 "$STATE/logs/jetty.log" >&2
			rm -f "$STATE/pid"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			log "not ready after ${START_TIMEOUT}s; see $STATE/logs/jetty.log"
			cmd_stop
			return 1
		fi
		sleep 0.5
	done
	log "ready at $url (pid $(cat "$STATE/pid"))"
	print_env | tee "$STATE/env"
}

cmd_stop() {
	if [[ ! -s "$STATE/pid" ]]; then
		return 0
	fi
	local pid i
	pid="$(cat "$STATE/pid")"
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		for ((i = 0; i < 60; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.25
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "pid $pid did not stop; killing it"
			kill -9 "$pid" 2>/dev/null || true
			while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
		fi
	fi
	rm -f "$STATE/pid"
}

cmd_status() {
	if running; then
		echo "running (pid $(cat "$STATE/pid")) at $(cat "$STATE/url")"
	else
		echo "stopped"
		return 1
	fi
}

main() {
	case "${1:-}" in
	start) cmd_start ;;
	stop) cmd_stop ;;
	restart)
		cmd_stop
		cmd_start reuse >/dev/null
		;;
	status) cmd_status ;;
	env)
		running || { log "not running"; return 1; }
		print_env
		;;
	*)
		echo "usage: $0 start|stop|restart|status|env" >&2
		return 2
		;;
	esac
}

main "$@"
