package guacamoletest_test

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

// httpTunnel is an HTTP tunnel a test has connected.
type httpTunnel struct {
	srv         *guacamoletest.Server
	uuid        string
	tunnelToken string
}

// tunnelPost posts body to {base}/tunnel?rawQuery.
func tunnelPost(t *testing.T, srv *guacamoletest.Server, rawQuery, contentType, body string,
	h http.Header) response {

	t.Helper()
	req := newRequest(t, http.MethodPost, srv.URL+"/tunnel?"+rawQuery, strings.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return do(t, req)
}

const formType = "application/x-www-form-urlencoded; charset=UTF-8"

// httpConnect opens an HTTP tunnel, failing the test if it is refused.
func httpConnect(t *testing.T, srv *guacamoletest.Server, form url.Values) *httpTunnel {
	t.Helper()
	resp := tunnelPost(t, srv, "connect", formType, form.Encode(), nil)
	if resp.status != http.StatusOK {
		t.Fatalf("connect: got status %d (%s); want 200", resp.status,
			resp.header.Get("Guacamole-Error-Message"))
	}
	h := &httpTunnel{srv: srv, uuid: resp.body, tunnelToken: resp.header.Get("Guacamole-Tunnel-Token")}
	if h.tunnelToken == "" {
		t.Fatal("connect: no Guacamole-Tunnel-Token header")
	}
	return h
}

// streamedRead is a read request whose response is still arriving.
type streamedRead struct {
	resp *http.Response
	body *bufio.Reader
}

// read starts read number n and returns once its headers have arrived.
func (h *httpTunnel) read(t *testing.T, n int) *streamedRead {
	t.Helper()
	// The timeout guards against a hung test; no timing is asserted.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		h.srv.URL+"/tunnel?read:"+h.uuid+":"+strconv.Itoa(n), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Guacamole-Tunnel-Token", h.tunnelToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("read %d: %v", n, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("read %d: got status %d; want 200", n, resp.StatusCode)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/octet-stream" {
		t.Errorf("read %d: got Content-Type %q; want application/octet-stream", n, got)
	}
	return &streamedRead{resp: resp, body: bufio.NewReader(resp.Body)}
}

// readOnce makes a read request that is expected to fail, and returns its
// answer.
func (h *httpTunnel) readOnce(t *testing.T, n int) response {
	t.Helper()
	req := newRequest(t, http.MethodGet, h.srv.URL+"/tunnel?read:"+h.uuid+":"+strconv.Itoa(n), nil)
	req.Header.Set("Guacamole-Tunnel-Token", h.tunnelToken)
	return do(t, req)
}

// write posts instructions to the tunnel.
func (h *httpTunnel) write(t *testing.T, text string) response {
	t.Helper()
	return tunnelPost(t, h.srv, "write:"+h.uuid, "application/octet-stream", text,
		http.Header{"Guacamole-Tunnel-Token": {h.tunnelToken}})
}

// next returns the next instruction; the end-of-instructions marker comes
// back as an instruction with one empty element.
func (r *streamedRead) next(t *testing.T) []string {
	t.Helper()
	in, err := readInstruction(r.body)
	if err != nil {
		t.Fatalf("read instruction: %v", err)
	}
	return in
}

// expect returns the next instruction with the given opcode, skipping the
// syncs an idle tunnel sends unless a sync is what it looks for.
func (r *streamedRead) expect(t *testing.T, op string) []string {
	t.Helper()
	for {
		in := r.next(t)
		if op != "sync" && in[0] == "sync" {
			continue
		}
		if in[0] != op || (op == "" && len(in) != 1) {
			t.Fatalf("got instruction %q; want opcode %q", in, op)
		}
		return in
	}
}

// expectEnd reads up to the end-of-instructions marker and checks that
// the response ends there.
func (r *streamedRead) expectEnd(t *testing.T) {
	t.Helper()
	for {
		in := r.next(t)
		if equal(in, "") {
			break
		}
	}
	if b, err := r.body.ReadByte(); err == nil {
		t.Errorf("got %q after the end-of-instructions marker; want the end", b)
	}
}

func TestHTTPTunnel(t *testing.T) {
	clock := newFakeClock()
	srv := newServer(t, guacamoletest.Options{Clock: clock.Now})
	token := mustLogin(t, srv, "alice", "alice-pw")

	resp := tunnelPost(t, srv, "connect", formType, connectParams(token).Encode(), nil)
	if resp.status != http.StatusOK {
		t.Fatalf("connect: got status %d; want 200", resp.status)
	}
	uuidRE := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	if !uuidRE.MatchString(resp.body) {
		t.Fatalf("connect: got body %q; want a tunnel UUID", resp.body)
	}
	if got := resp.header.Get("Cache-Control"); got != "no-cache" {
		t.Errorf("connect: got Cache-Control %q; want no-cache", got)
	}
	h := &httpTunnel{srv: srv, uuid: resp.body, tunnelToken: resp.header.Get("Guacamole-Tunnel-Token")}
	if h.tunnelToken == "" || h.tunnelToken == token {
		t.Fatal("connect: want a Guacamole-Tunnel-Token of the tunnel's own")
	}
	tunnels := srv.Tunnels()
	if len(tunnels) != 1 || tunnels[0].UUID != h.uuid || !tunnels[0].HTTP || tunnels[0].Token != token {
		t.Fatalf("got tunnels %d; want the one HTTP tunnel, opened with the login's token", len(tunnels))
	}

	ts := strconv.FormatInt(clock.Now().UnixMilli(), 10)
	first := h.read(t, 0)
	for _, want := range [][]string{{"size", "0", "1024", "768"}, {"sync", ts}} {
		if got := first.next(t); !equal(got, want...) {
			t.Fatalf("got instruction %q; want %q", got, want)
		}
	}

	// A write is answered on the read in progress.
	if w := h.write(t, "4.sync,"+strconv.Itoa(len(ts))+"."+ts+";4.size,3.800,3.600;"); w.status != http.StatusOK || w.body != "" {
		t.Fatalf("write: got status %d body %q; want 200 and no body", w.status, w.body)
	}
	if got := first.expect(t, "size"); !equal(got, "size", "0", "800", "600") {
		t.Errorf("got %q; want size 0,800,600", got)
	}

	// The next read takes over: the first ends with the marker.
	second := h.read(t, 1)
	first.expectEnd(t)

	h.write(t, "3.nop;10.disconnect;")
	if got := second.expect(t, "disconnect"); !equal(got, "disconnect") {
		t.Errorf("got %q; want disconnect", got)
	}
	second.expectEnd(t)
	if st := srv.Stats(); st.OpenTunnels != 0 || st.TunnelsOpened != 1 {
		t.Errorf("got OpenTunnels=%d TunnelsOpened=%d; want 0 and 1", st.OpenTunnels, st.TunnelsOpened)
	}
	r := h.readOnce(t, 2)
	if r.status != http.StatusNotFound || r.header.Get("Guacamole-Status-Code") != "516" {
		t.Errorf("read after disconnect: got %d %q; want 404 516", r.status,
			r.header.Get("Guacamole-Status-Code"))
	}
}

func TestHTTPTunnelErrors(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{})
	token := mustLogin(t, srv, "alice", "alice-pw")
	open := httpConnect(t, srv, connectParams(token))
	bad := strings.Repeat("0", 64)
	otherUUID := "00000000-0000-4000-8000-000000000000"
	tunnelHeader := http.Header{"Guacamole-Tunnel-Token": {open.tunnelToken}}

	tests := []struct {
		name        string
		method      string
		query       string // "-" for none at all
		contentType string
		body        string
		header      http.Header
		wantStatus  int
		wantCode    string // Guacamole-Status-Code; "" for none
		wantMessage string
	}{
		{"bad token", "POST", "connect", formType, connectParams(bad).Encode(), nil,
			403, "769", "Permission Denied."},
		{"no token", "POST", "connect", formType, connectParams("").Encode(), nil,
			403, "769", "Permission Denied."},
		{"token in header only", "POST", "connect", formType, connectParams("").Encode(),
			http.Header{"Guacamole-Token": {token}}, 403, "769", "Permission Denied."},
		{"bad token first", "POST", "connect", formType,
			connectParams(bad).Encode() + "&token=" + token, nil, 403, "769", "Permission Denied."},
		{"form not form-encoded", "POST", "connect", "text/plain", connectParams(token).Encode(), nil,
			400, "768", `Parameter "GUAC_ID" is required.`},
		{"GET connect", "GET", "connect", "", "", nil,
			400, "768", `Parameter "GUAC_ID" is required.`},
		{"token in the query", "POST", "connect&token=made-up", formType, connectParams(token).Encode(), nil,
			400, "768", "Invalid tunnel operation: connect&token=made-up"},
		{"unknown connection", "POST", "connect", formType,
			"GUAC_DATA_SOURCE=default&GUAC_ID=99&GUAC_TYPE=c&token=" + token, nil,
			404, "516", "Requested tunnel destination does not exist."},
		{"unknown data source", "POST", "connect", formType,
			"GUAC_DATA_SOURCE=mysql&GUAC_ID=1&GUAC_TYPE=c&token=" + token, nil,
			404, "516", `Session not associated with authentication provider "mysql".`},
		{"no query", "POST", "-", "", "", nil, 400, "768", "No query string provided."},
		// The header ends in a space, which HTTP clients trim.
		{"empty query", "POST", "", "", "", nil, 400, "768", "Invalid tunnel operation:"},
		{"unknown operation", "GET", "status", "", "", nil, 400, "768", "Invalid tunnel operation: status"},
		{"read without tunnel token", "GET", "read:" + open.uuid + ":0", "", "", nil,
			404, "516", "No such tunnel."},
		{"read with the auth token", "GET", "read:" + open.uuid + ":0", "", "",
			http.Header{"Guacamole-Tunnel-Token": {token}}, 404, "516", "No such tunnel."},
		{"read of another tunnel", "GET", "read:" + otherUUID + ":0", "", "", tunnelHeader,
			404, "516", "No such tunnel."},
		{"write without tunnel token", "POST", "write:" + open.uuid, "application/octet-stream",
			"3.nop;", nil, 404, "516", "No such tunnel."},
		{"read with a short UUID", "GET", "read:1234", "", "", tunnelHeader, 500, "", ""},
		{"PUT", "PUT", "connect", formType, connectParams(token).Encode(), nil, 405, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := srv.URL + "/tunnel"
			if tt.query != "-" {
				u += "?" + tt.query
			}
			req := newRequest(t, tt.method, u, strings.NewReader(tt.body))
			for k, v := range tt.header {
				req.Header[k] = v
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			resp := do(t, req)
			if resp.status != tt.wantStatus {
				t.Errorf("got status %d; want %d", resp.status, tt.wantStatus)
			}
			if got := resp.header.Get("Guacamole-Status-Code"); got != tt.wantCode {
				t.Errorf("got Guacamole-Status-Code %q; want %q", got, tt.wantCode)
			}
			if got := resp.header.Get("Guacamole-Error-Message"); got != tt.wantMessage {
				t.Errorf("got Guacamole-Error-Message %q; want %q", got, tt.wantMessage)
			}
			if got := resp.header.Get("Guacamole-Tunnel-Token"); got != "" {
				t.Error("a refused request got a Guacamole-Tunnel-Token")
			}
		})
	}

	tunnels := srv.Tunnels()
	if len(tunnels) != 1 || tunnels[0].UUID != open.uuid {
		t.Errorf("got %d open tunnels; want only the one opened first", len(tunnels))
	}
}

func TestHTTPTunnelTimesOut(t *testing.T) {
	clock := newFakeClock()
	srv := newServer(t, guacamoletest.Options{Clock: clock.Now, SessionTimeout: time.Hour})
	token := mustLogin(t, srv, "alice", "alice-pw")
	h := httpConnect(t, srv, connectParams(token))

	clock.Advance(14 * time.Second)
	h.write(t, "3.nop;") // an access: the tunnel has 15 seconds from here
	clock.Advance(14 * time.Second)
	if got := srv.Stats().OpenTunnels; got != 1 {
		t.Fatalf("14s after the last write: got %d open tunnels; want 1", got)
	}
	clock.Advance(time.Second)
	if got := srv.Stats().OpenTunnels; got != 0 {
		t.Fatalf("15s after the last write: got %d open tunnels; want 0", got)
	}
	if r := h.readOnce(t, 0); r.status != http.StatusNotFound {
		t.Errorf("read of a timed-out tunnel: got status %d; want 404", r.status)
	}

	// The timeout closed the tunnel 15s after the write, which reset the
	// session's idle timer then.
	clock.Advance(time.Hour - time.Second)
	srv.ExpireIdle()
	if got := srv.Stats().LiveSessions; got != 1 {
		t.Fatalf("just under an hour after the close: got %d live sessions; want 1", got)
	}
	clock.Advance(time.Second)
	srv.ExpireIdle()
	if got := srv.Stats().LiveSessions; got != 0 {
		t.Errorf("an hour after the close: got %d live sessions; want 0", got)
	}
}
