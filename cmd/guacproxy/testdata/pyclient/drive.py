"""Drive guacproxy with guacapy, an unmodified Guacamole REST client.

The client logs in through guacproxy as it would log in to Guacamole, lists
the connections of the data source the login returned, asks whose session it
holds, and logs out. A JSON summary goes to stdout; it never holds a token,
a password or an API key.

Environment:
  GUACPROXY_URL       guacproxy's base URL, e.g. http://127.0.0.1:8080/
                      (Guacamole's paths are served at guacproxy's root).
  GUACPROXY_API_KEY   if set, log in with username GUACPROXY_USERNAME (any
                      value; "anything" if unset) and the API key as the
                      password. If unset, log in with made-up credentials.

Exit status: 0 on success, 1 if any step failed (the reason, without
secrets, on stderr), 2 on a usage error.
"""

import json
import logging
import os
import re
import sys
from importlib.metadata import version
from urllib.parse import urlsplit

from guacapy import Guacamole

# Credentials no Guacamole account has; guacproxy must answer the login
# itself instead of passing them on.
DUMMY_USERNAME = "guacadmin"
DUMMY_PASSWORD = "not-a-real-password"

TOKEN_SHAPE = re.compile(r"[0-9A-F]{64}")


class RecordingGuacamole(Guacamole):
    """Guacamole that also keeps the username its login answer named.

    guacapy reads authToken, dataSource and availableDataSources from the
    answer to POST /api/tokens but drops username; this keeps it so that the
    summary can show it. The request itself is guacapy's own.
    """

    login_username = None

    def _authenticate(self):
        response = super()._authenticate()
        self.login_username = response.json().get("username")
        return response


def redact(text, secrets):
    """Return text without tokens, token parameters or the given secrets."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "REDACTED")
    text = re.sub(r"[0-9A-Fa-f]{64}", "REDACTED", text)
    return re.sub(r"(?i)(token=)[^&\s'\"]+", r"\1REDACTED", text)


def describe(err, secrets):
    """Describe a failed step without the URL's query, which holds the token."""
    response = getattr(err, "response", None)
    if response is None:
        return redact(f"{type(err).__name__}: {err}", secrets)
    request = response.request
    path = urlsplit(request.url).path if request is not None else "?"
    method = request.method if request is not None else "?"
    return redact(
        f"{method} {path} answered {response.status_code}: {response.text[:500]}",
        secrets,
    )


def main():
    # guacapy logs request parameters, token included, at debug level.
    logging.getLogger("guacapy").setLevel(logging.WARNING)

    url = os.environ.get("GUACPROXY_URL", "")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        print("drive.py: GUACPROXY_URL must be an http(s) URL", file=sys.stderr)
        return 2
    base_path = parts.path if parts.path.endswith("/") else parts.path + "/"
    port = parts.port or (443 if parts.scheme == "https" else 80)

    api_key = os.environ.get("GUACPROXY_API_KEY", "")
    if api_key:
        mode = "api-key"
        username = os.environ.get("GUACPROXY_USERNAME", "anything")
        password = api_key
    else:
        mode = "dummy"
        username, password = DUMMY_USERNAME, DUMMY_PASSWORD
    secrets = [api_key, password]

    step = "login"
    try:
        client = RecordingGuacamole(
            hostname=parts.hostname,
            username=username,
            password=password,
            connection_protocol=parts.scheme,
            connection_port=port,
            base_url_path=base_path,
            ssl_verify=True,
        )
        token_shaped = bool(TOKEN_SHAPE.fullmatch(client.token or ""))

        step = "list connections"
        connections = client.connections.list()
        names = sorted(c.get("name", "") for c in connections.values())

        step = "read own user"
        session_username = client.users.self_details().get("username")

        step = "logout"
        client.logout()
    except Exception as err:  # noqa: BLE001 - every failure is reported
        reason = describe(err, secrets)
        print(f"drive.py: {mode}: {step} failed: {reason}", file=sys.stderr)
        return 1

    summary = {
        "client": f"guacapy {version('guacapy')}",
        "mode": mode,
        "loginUsername": client.login_username,
        "username": session_username,
        "dataSource": client.primary_datasource,
        "availableDataSources": client.data_sources,
        "tokenShaped": token_shaped,
        "connections": names,
        "loggedOut": client.token is None,
    }
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
