// Package guacamoletest provides an in-process emulator of the Apache
// Guacamole web application's REST API, for tests and demonstrations, in the
// spirit of net/http/httptest.
//
// A Server accepts logins at POST {base}/api/tokens, revokes tokens at
// DELETE {base}/api/tokens/{token} and DELETE {base}/api/session, answers
// token checks at HEAD {base}/api/session, and serves a handful of data
// endpoints under {base}/api/session/data/{dataSource}/. It behaves like a
// Guacamole 1.6 deployment that authenticates from user-mapping.xml and runs
// the guacamole-auth-ban extension:
//
//   - Status codes and JSON error bodies match Guacamole's, field for field
//     and in the same order, with absent values sent as null. Every
//     authentication failure is 403, never 401.
//   - Tokens are 32 random bytes written as 64 upper-case hex digits. A login
//     that posts a still-valid token gets the same token back; an unknown or
//     expired token is treated as if none had been sent.
//   - REST calls read the token from the Guacamole-Token header when it is
//     present and non-empty, and otherwise from the first token query
//     parameter. Every successful use of a token resets its idle timer,
//     except HEAD {base}/api/session.
//   - A permission denial on an object ("Permission denied.", lower-case d)
//     leaves the token valid; an invalid token gets "Permission Denied.".
//   - Failed logins are counted per remote address (the host part of
//     http.Request.RemoteAddr; X-Forwarded-For is ignored, as it is by a
//     Guacamole without a trusted-proxy valve). The attempt that reaches the
//     limit and every later login from that address are answered 429 until
//     the ban ends, even with correct credentials. A login request with no
//     credentials and no parameters at all is ignored by the ban, as the
//     extension ignores the web UI's first anonymous attempt.
//
// Both tunnels are served as Guacamole serves them. GET
// {base}/websocket-tunnel (subprotocol "guacamole") and POST
// {base}/tunnel?connect (form-encoded body) read the token only from the
// first token parameter, never from a header. The WebSocket handshake always
// succeeds; a refused tunnel is then closed with the WebSocket code of its
// Guacamole status and the status code as reason (1008 and "769" for a bad
// token), without any instruction. The HTTP tunnel answers errors with the
// status and Guacamole-Status-Code and Guacamole-Error-Message headers, and
// its connect answer carries the Guacamole-Tunnel-Token that reads
// ({base}/tunnel?read:<uuid>:<n>) and writes ({base}/tunnel?write:<uuid>)
// must send. Opening or closing a tunnel resets its session's idle timer, a
// session with an open tunnel never expires, and revoking a token closes
// every tunnel opened with it (WebSocket close code 1000, reason "0").
//
// Once open, a WebSocket tunnel first sends the internal instruction (empty
// opcode) carrying the tunnel's UUID. Either tunnel then sends size for the
// default layer (GUAC_WIDTH by GUAC_HEIGHT, or 1024 by 768) and a sync, and
// a sync after every 5 seconds of silence; sync timestamps come from
// Options.Clock. Of the client's instructions, the internal ping is echoed,
// size W,H is answered with size 0,W,H and a sync, and disconnect is
// answered with disconnect before the tunnel closes; all others are
// accepted and ignored.
//
// The emulator deliberately differs from a real deployment in these ways:
//
//   - Idle expiry is decided from Options.Clock whenever a token is used, as
//     well as by ExpireIdle, so tests with a fake clock are deterministic. A
//     real Guacamole removes idle sessions from a task that runs once a
//     minute, so a real token may keep working up to about a minute past
//     its timeout. As in Guacamole, a session counts as expired once it has
//     been idle for SessionTimeout or longer.
//   - Tunnels lead to an emulated remote desktop rather than to guacd: it
//     answers only a few instructions (see above), and an HTTP tunnel that
//     has gone 15 seconds without a read or write is closed when the
//     emulator next looks at its tunnels, by Clock, rather than by a timer.
//   - The real ban extension uses one setting both as the window in which
//     failures accumulate and as the length of the ban; Options splits it
//     into BanWindow and BanDuration. With equal values, as by default, the
//     behaviour is the same.
//   - There is a single authentication provider, named by
//     Options.DataSource. Data endpoints serve two sample connections plus
//     any created through the API; every user sees all of them.
//   - Paths the emulator does not know, and known paths called with an
//     unsupported method, get a short plain-text 404 or 405 rather than the
//     servlet container's error page. A malformed JSON request body is
//     answered 400 BAD_REQUEST in Guacamole's error shape.
package guacamoletest
