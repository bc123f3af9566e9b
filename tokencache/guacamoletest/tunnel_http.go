package guacamoletest

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	// tunnelTokenHeader carries an HTTP tunnel's own token, handed out by
	// the connect request and required by every read and write.
	tunnelTokenHeader = "Guacamole-Tunnel-Token"
	// uuidLength is the length of a tunnel UUID in a read or write query.
	uuidLength = 36
	// maxTunnelBody bounds a connect form or a write, like the servlet
	// container's default limit on a posted form.
	maxTunnelBody = 2 << 20
	// endOfInstructions ends every response to an HTTP tunnel read.
	endOfInstructions = "0.;"
)

// serveHTTPTunnel handles {base}/tunnel, whose query string names the
// operation exactly as Guacamole's HTTP tunnel servlet parses it:
// "connect", "read:<uuid>…" or "write:<uuid>…", with anything after the
// 36-character UUID ignored. GET and POST are treated alike.
func (s *Server) serveHTTPTunnel(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		methodNotAllowed("GET, POST").write(w, r)
		return
	}
	s.mu.Lock()
	entered := s.enterTunnelLocked()
	s.mu.Unlock()
	if !entered {
		http.Error(w, "503 server closed", http.StatusServiceUnavailable)
		return
	}
	defer s.handlers.Done()

	q := r.URL.RawQuery
	op, uuid := q, ""
	for _, prefix := range []string{"read:", "write:"} {
		if rest, ok := strings.CutPrefix(q, prefix); ok {
			if len(rest) < uuidLength {
				// Guacamole cuts the UUID out without checking the length
				// and fails with the servlet container's bare error.
				http.Error(w, "500 internal server error", http.StatusInternalServerError)
				return
			}
			op, uuid = prefix, rest[:uuidLength]
		}
	}

	switch {
	case q == "" && !r.URL.ForceQuery:
		writeTunnelError(w, &tunnelError{statusBadRequest, "No query string provided."})
	case op == "connect":
		s.httpConnect(w, r)
	case op == "read:":
		s.httpRead(w, r, uuid)
	case op == "write:":
		s.httpWrite(w, r, uuid)
	default:
		writeTunnelError(w, &tunnelError{statusBadRequest, "Invalid tunnel operation: " + q})
	}
}

// httpConnect opens a tunnel from the form-encoded body and answers with
// its UUID and its tunnel token.
func (s *Server) httpConnect(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxTunnelBody)
	_ = r.ParseForm() // what cannot be parsed is simply absent, as in a servlet

	req, terr := parseTunnelRequest(r.PostForm)
	var t *tunnel
	if terr == nil {
		t, terr = s.openTunnel(req, true)
	}
	if terr != nil {
		writeTunnelError(w, terr)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set(tunnelTokenHeader, t.httpToken)
	_, _ = io.WriteString(w, t.info.UUID)
}

// httpRead streams the tunnel's output. Like Guacamole, a read sends at
// least one batch of instructions and then keeps streaming until another
// read for the same tunnel arrives, which takes over; the response ends
// with the end-of-instructions marker "0.;". Once the tunnel has closed,
// a read still pending ends with the marker, and later reads get 404.
func (s *Server) httpRead(w http.ResponseWriter, r *http.Request, uuid string) {
	t, terr := s.httpTunnelFor(r, uuid)
	if terr != nil {
		writeTunnelError(w, terr)
		return
	}

	t.queued.Add(1)
	t.signal() // asks the read in progress, if any, to hand over
	select {
	case t.readers <- struct{}{}:
		defer func() { <-t.readers }()
	case <-t.done:
	case <-r.Context().Done():
		t.queued.Add(-1)
		return
	}
	t.queued.Add(-1)

	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush() // the headers, so the client sees the read has begun

	keepAlive := time.NewTicker(tunnelKeepAlive)
	defer keepAlive.Stop()
	sent := false
	for {
		if out := t.take(); out != "" {
			if _, err := io.WriteString(w, out); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			sent = true
			keepAlive.Reset(tunnelKeepAlive)
		}
		if sent && t.queued.Load() > 0 {
			break
		}
		select {
		case <-t.wake:
		case <-keepAlive.C:
			t.send(s.syncInstruction(s.opts.Clock()))
		case <-t.done:
			_, _ = io.WriteString(w, t.take()+endOfInstructions)
			_ = rc.Flush()
			return
		case <-r.Context().Done():
			return
		}
	}
	_, _ = io.WriteString(w, endOfInstructions)
	_ = rc.Flush()
}

// httpWrite passes the request body to the tunnel as client instructions.
func (s *Server) httpWrite(w http.ResponseWriter, r *http.Request, uuid string) {
	t, terr := s.httpTunnelFor(r, uuid)
	if terr != nil {
		writeTunnelError(w, terr)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTunnelBody))
	if err != nil {
		return // the client is gone or sent too much; nothing to answer
	}
	s.input(t, string(body))

	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

// httpTunnelFor finds the open HTTP tunnel that the request's tunnel token
// names and checks that it is the one with the given UUID. Finding it
// counts as an access that keeps the tunnel from timing out.
func (s *Server) httpTunnelFor(r *http.Request, uuid string) (*tunnel, *tunnelError) {
	now := s.opts.Clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepTunnelsLocked(now)

	t, ok := s.httpTunnels[r.Header.Get(tunnelTokenHeader)]
	if !ok || t.info.UUID != uuid {
		return nil, &tunnelError{statusNotFound, "No such tunnel."}
	}
	t.accessed = now
	return t, nil
}

// writeTunnelError answers a failed HTTP tunnel request the way Guacamole
// does: not with JSON, but with the HTTP status and two headers carrying
// the Guacamole status code and message. The body, which is the servlet
// container's error page in Guacamole, is left empty.
func writeTunnelError(w http.ResponseWriter, e *tunnelError) {
	h := w.Header()
	h.Set("Guacamole-Status-Code", strconv.Itoa(e.status.guac))
	h.Set("Guacamole-Error-Message", e.msg)
	w.WriteHeader(e.status.http)
}
