package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/guacproxy/guacproxy/proxy/metrics"
	"github.com/guacproxy/guacproxy/tokencache"
	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

// Every log line of the suite goes to logs; secrets collects every token,
// password and API key the suite used. TestMain checks that no secret was
// logged.
var (
	logs    syncBuffer
	secrets sync.Map
)

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		all := logs.String()
		secrets.Range(func(k, _ any) bool {
			if strings.Contains(all, k.(string)) {
				fmt.Fprintf(os.Stderr, "a secret (%d characters) appears in the logs\n", len(k.(string)))
				code = 1
			}
			return true
		})
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func testLogger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(&logs), zapcore.DebugLevel))
}

const (
	reportingKey = "reporting-api-key-0123456789"
	toolKey      = "tool-api-key-9876543210"
)

var (
	reporting = tokencache.Identity{Name: "reporting", Username: "svc-reporting", Password: "reporting-pw-secret"}
	tool      = tokencache.Identity{Name: "tool", Username: "svc-tool", Password: "tool-pw-secret"}
)

func init() {
	for _, s := range []string{reportingKey, toolKey, reporting.Password, tool.Password} {
		secrets.Store(s, true)
	}
}

// seen records what reached Guacamole.
type seen struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (s *seen) observe(r *http.Request) {
	if tok := r.Header.Get("Guacamole-Token"); tok != "" {
		secrets.Store(tok, true)
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, r.Clone(context.Background()))
	s.mu.Unlock()
}

func (s *seen) last(t *testing.T) *http.Request {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		t.Fatal("no request reached Guacamole")
	}
	return s.reqs[len(s.reqs)-1]
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

type env struct {
	emu   *guacamoletest.Server
	seen  *seen
	cache *tokencache.Cache
	proxy *Proxy
	front *httptest.Server
}

type envOptions struct {
	identities []Identity
	admin      []string // usernames with admin rights
	transport  http.RoundTripper
	upstream   string // overrides the emulator's URL
	trusted    []netip.Prefix
	tls        *tls.Config // serve the proxy over TLS with this config
	audit      *zap.Logger
	metrics    *metrics.Metrics
	clock      func() time.Time // the token cache's clock
}

// newEnv runs the emulator, a token cache, and the proxy behind a real HTTP
// server: a test talks to front as a tool would.
func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.identities == nil {
		o.identities = []Identity{
			{Identity: reporting, APIKeyHashes: [][32]byte{sha256.Sum256([]byte(reportingKey))}},
			{Identity: tool, APIKeyHashes: [][32]byte{sha256.Sum256([]byte(toolKey))}, Default: true},
		}
	}
	e := &env{seen: &seen{}}
	users := map[string]guacamoletest.User{
		reporting.Username: {Password: reporting.Password},
		tool.Username:      {Password: tool.Password},
	}
	for _, u := range o.admin {
		users[u] = guacamoletest.User{Password: users[u].Password, Admin: true}
	}
	e.emu = guacamoletest.NewServer(guacamoletest.Options{Users: users, Observe: e.seen.observe})
	t.Cleanup(e.emu.Close)

	base := e.emu.URL
	if o.upstream != "" {
		base = o.upstream
	}
	transport := o.transport
	if transport == nil {
		transport = &http.Transport{}
	}
	e.cache = tokencache.New(tokencache.Options{
		Client:      tokencache.NewClient(e.emu.URL, &http.Client{Transport: transport}),
		CallTimeout: 2 * time.Second,
		Logger:      testLogger(),
		Observer:    o.metrics,
		Clock:       o.clock,
	})
	t.Cleanup(func() {
		_, _ = e.cache.Close(context.Background())
		if tr, ok := transport.(*http.Transport); ok {
			tr.CloseIdleConnections()
		}
	})

	u, _ := url.Parse(base)
	p, err := New(Options{Upstream: u, Transport: transport, Tokens: e.cache,
		Identities: o.identities, TrustedProxies: o.trusted, Logger: testLogger(),
		AuditLogger: o.audit, Metrics: o.metrics})
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = p
	e.front = httptest.NewUnstartedServer(p)
	if o.tls != nil {
		e.front.TLS = o.tls
		e.front.StartTLS()
	} else {
		e.front.Start()
	}
	t.Cleanup(e.front.Close)
	return e
}

// do sends a request to the proxy and returns the status and body.
func (e *env) do(t *testing.T, method, path string, hdr http.Header, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.front.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	client := &http.Client{
		Transport: e.front.Client().Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range e.emu.LiveTokens() {
		secrets.Store(tok, true)
	}
	checkNoSecret(t, resp.Header, data)
	return resp, data
}

// checkNoSecret fails if a response carries a real token, a password or an
// API key the suite used. Phantom tokens are not secrets of that kind: they
// are what login emulation hands out.
func checkNoSecret(t *testing.T, h http.Header, body []byte) {
	t.Helper()
	var all strings.Builder
	all.Write(body)
	for k, vs := range h {
		all.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
	}
	secrets.Range(func(k, _ any) bool {
		if strings.Contains(all.String(), k.(string)) {
			t.Errorf("a response carries a secret (%d characters)", len(k.(string)))
		}
		return true
	})
}

func bearerHeader(key string) http.Header {
	return http.Header{"Authorization": {"Bearer " + key}}
}

// guacError decodes a Guacamole JSON error body, failing on any other shape.
func guacError(t *testing.T, body []byte) apiError {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("error body is not JSON: %q", body)
	}
	for _, k := range []string{"message", "translatableMessage", "statusCode", "expected", "patches", "type"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("error body lacks %q: %s", k, body)
		}
	}
	var e apiError
	_ = json.Unmarshal(body, &e)
	if e.TranslatableMessage.Key != "APP.TEXT_UNTRANSLATED" || e.TranslatableMessage.Variables["MESSAGE"] != e.Message {
		t.Errorf("translatableMessage = %+v; want APP.TEXT_UNTRANSLATED with MESSAGE %q",
			e.TranslatableMessage, e.Message)
	}
	return e
}

func TestInjectsTokenAndStripsClientCredentials(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		header    http.Header
		wantQuery string
		wantUser  string
	}{
		{
			name:     "default identity, nothing sent",
			path:     "/api/session/data/default/self",
			wantUser: tool.Username,
		},
		{
			name:     "api key picks its identity",
			path:     "/api/session/data/default/self",
			header:   bearerHeader(reportingKey),
			wantUser: reporting.Username,
		},
		{
			name:     "lower-case bearer scheme",
			path:     "/api/session/data/default/self",
			header:   http.Header{"Authorization": {"bearer " + reportingKey}},
			wantUser: reporting.Username,
		},
		{
			name:      "client header and query tokens",
			path:      "/api/session/data/default/self?token=CLIENT1&x=1",
			header:    http.Header{"Guacamole-Token": {"CLIENT2", "CLIENT3"}},
			wantQuery: "x=1",
			wantUser:  tool.Username,
		},
		{
			name:      "duplicates, cases and escapes of token",
			path:      "/api/session/data/default/self?a=1&token=C1&TOKEN=C2&b=2&Token=C3&%74oken=C4&to%6Ben=C5&c=%74",
			wantQuery: "a=1&b=2&c=%74",
			wantUser:  tool.Username,
		},
		{
			name:      "undecodable parameter name",
			path:      "/api/session/data/default/self?tok%zzen=C1&keep=yes",
			wantQuery: "keep=yes",
			wantUser:  tool.Username,
		},
		{
			name:     "basic credentials are not passed on",
			path:     "/api/session/data/default/self",
			header:   http.Header{"Authorization": {"Basic c3ZjLXRvb2w6eA=="}},
			wantUser: tool.Username,
		},
		{
			name:     "non-canonical header spelling",
			path:     "/api/session/data/default/self",
			header:   http.Header{"guacamole-token": {"CLIENT"}, "GUACAMOLE-TOKEN": {"CLIENT"}},
			wantUser: tool.Username,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			resp, body := e.do(t, http.MethodGet, tt.path, tt.header, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d; want 200 (body %s)", resp.StatusCode, body)
			}
			var self struct{ Username string }
			if err := json.Unmarshal(body, &self); err != nil || self.Username != tt.wantUser {
				t.Errorf("self = %q (err %v); want %q", self.Username, err, tt.wantUser)
			}

			got := e.seen.last(t)
			live := e.emu.LiveTokens()
			if len(live) != 1 {
				t.Fatalf("live sessions = %d; want 1", len(live))
			}
			if v := got.Header.Values("Guacamole-Token"); len(v) != 1 || v[0] != live[0] {
				t.Errorf("Guacamole-Token reaching Guacamole: %d values, ours=%t; want exactly ours",
					len(v), len(v) == 1 && v[0] == live[0])
			}
			for k := range got.Header {
				if strings.EqualFold(k, "Authorization") || (strings.EqualFold(k, "Guacamole-Token") && k != "Guacamole-Token") {
					t.Errorf("header %q reached Guacamole", k)
				}
			}
			if got.URL.RawQuery != tt.wantQuery {
				t.Errorf("query reaching Guacamole = %q; want %q", got.URL.RawQuery, tt.wantQuery)
			}
			if !strings.HasPrefix(got.URL.Path, "/guacamole/api/") {
				t.Errorf("path reaching Guacamole = %q; want it under /guacamole", got.URL.Path)
			}
		})
	}
}

func TestStripTokenParam(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"a=1&b=2", "a=1&b=2"},
		{"token=x", ""},
		{"token", ""},
		{"token=a&token=b", ""},
		{"GUAC_ID=1&token=x&GUAC_TYPE=c&GUAC_AUDIO=a&GUAC_AUDIO=b", "GUAC_ID=1&GUAC_TYPE=c&GUAC_AUDIO=a&GUAC_AUDIO=b"},
		{"&&token=x&&k=v&", "k=v"},
		{"tokens=1&mytoken=2", "tokens=1&mytoken=2"},
		{"t%6Fken=x&%54OKEN=y", ""},
		{"token%3Dx=1", "token%3Dx=1"},
	}
	for _, tt := range tests {
		if got := stripTokenParam(tt.in); got != tt.want {
			t.Errorf("stripTokenParam(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestUnidentifiedCallerGets401(t *testing.T) {
	e := newEnv(t, envOptions{identities: []Identity{
		{Identity: reporting, APIKeyHashes: [][32]byte{sha256.Sum256([]byte(reportingKey))}},
	}})
	for _, hdr := range []http.Header{nil, bearerHeader("wrong-key"), {"Authorization": {"Basic eDp5"}}} {
		resp, body := e.do(t, http.MethodGet, "/api/session/data/default/self", hdr, nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status = %d; want 401", resp.StatusCode)
		}
		if got := guacError(t, body); got.Type != "PERMISSION_DENIED" || !strings.Contains(got.Message, "identify") {
			t.Errorf("error = %+v; want PERMISSION_DENIED saying the caller is not identified", got)
		}
	}
	if n := e.seen.count(); n != 0 {
		t.Errorf("%d requests reached Guacamole; want 0", n)
	}
}

func TestRefusesClientRevocationsOfRealSessions(t *testing.T) {
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodDelete, "/api/tokens/ABCDEF", http.StatusNotFound},
		{http.MethodGet, "/api/tokens", http.StatusForbidden},
		{http.MethodDelete, "/api/session", http.StatusForbidden},
		{http.MethodDelete, "/api/%73ession", http.StatusForbidden},
		// A path that is not clean is only redirected to its clean form,
		// never forwarded as it is.
		{http.MethodDelete, "/api/./session", http.StatusMovedPermanently},
		{http.MethodDelete, "/api//tokens/ABCDEF", http.StatusMovedPermanently},
	}
	e := newEnv(t, envOptions{})
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, data := e.do(t, tt.method, tt.path, nil, nil)
			if resp.StatusCode != tt.want {
				t.Fatalf("status = %d; want %d (body %s)", resp.StatusCode, tt.want, data)
			}
			if tt.want != http.StatusMovedPermanently {
				guacError(t, data)
			}
		})
	}
	if n := e.seen.count(); n != 0 {
		t.Errorf("%d requests reached Guacamole; want 0", n)
	}
	if st := e.emu.Stats(); st.Logins != 0 || st.Revocations != 0 {
		t.Errorf("Guacamole logins=%d revocations=%d; want 0 and 0", st.Logins, st.Revocations)
	}
}

func TestGuacamoleRestartIsInvisibleToClients(t *testing.T) {
	e := newEnv(t, envOptions{})
	const workers, rounds = 8, 40
	var wg sync.WaitGroup
	var failures sync.Map
	restarted := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				if w == 0 && i == rounds/2 {
					e.emu.Restart()
					close(restarted)
				}
				resp, body := e.do(t, http.MethodGet, "/api/session/data/default/connections", nil, nil)
				if resp.StatusCode != http.StatusOK {
					failures.Store(fmt.Sprintf("worker %d round %d: %d %s", w, i, resp.StatusCode, body), true)
				}
			}
		})
	}
	wg.Wait()
	<-restarted
	failures.Range(func(k, _ any) bool { t.Error(k); return true })
	if got := e.emu.Stats().Logins; got != 2 {
		// One before the restart, and one after it shared by every worker.
		t.Errorf("logins = %d; want 2", got)
	}
}

func TestReplaysARequestWithABodyAfterRestart(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.do(t, http.MethodGet, "/api/session/data/default/self", nil, nil)
	e.emu.Restart()

	conn := `{"name":"new-host","parentIdentifier":"ROOT","protocol":"ssh","parameters":{"hostname":"h"},"attributes":{}}`
	hdr := http.Header{"Content-Type": {"application/json"}}
	resp, body := e.do(t, http.MethodPost, "/api/session/data/default/connections", hdr, strings.NewReader(conn))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d; want 200 (body %s)", resp.StatusCode, body)
	}
	var created struct{ Name, Identifier string }
	if err := json.Unmarshal(body, &created); err != nil || created.Name != "new-host" || created.Identifier == "" {
		t.Errorf("created = %+v (err %v); want new-host with an identifier", created, err)
	}
}

func TestLargeBodyIsNotReplayed(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.do(t, http.MethodGet, "/api/session/data/default/self", nil, nil)
	e.emu.Restart()

	big := `{"name":"` + strings.Repeat("x", maxReplayBody) + `"}`
	resp, body := e.do(t, http.MethodPost, "/api/session/data/default/connections",
		http.Header{"Content-Type": {"application/json"}}, strings.NewReader(big))
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status = %d; want Guacamole's 403 passed on", resp.StatusCode)
	}
	if got := guacError(t, body); got.Type != "PERMISSION_DENIED" {
		t.Errorf("type = %q; want PERMISSION_DENIED", got.Type)
	}
	// The dead token was still dropped: the next request works.
	if resp, _ := e.do(t, http.MethodGet, "/api/session/data/default/self", nil, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("next request status = %d; want 200", resp.StatusCode)
	}
}

func TestRealPermissionDenialPassesThrough(t *testing.T) {
	e := newEnv(t, envOptions{})
	resp, body := e.do(t, http.MethodGet, "/api/session/data/default/users", nil, nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status = %d; want 403", resp.StatusCode)
	}
	if got := guacError(t, body); got.Type != "PERMISSION_DENIED" || got.Message != "Permission denied." {
		t.Errorf("error = %+v; want Guacamole's own PERMISSION_DENIED", got)
	}
	if st := e.emu.Stats(); st.Logins != 1 || st.LiveSessions != 1 {
		t.Errorf("logins=%d live=%d; want 1 and 1: a live token is kept", st.Logins, st.LiveSessions)
	}
}

func TestWrongPasswordGivesClearErrorsAndNoBan(t *testing.T) {
	bad := tokencache.Identity{Name: "broken", Username: tool.Username, Password: "wrong-password-secret"}
	secrets.Store(bad.Password, true)
	e := newEnv(t, envOptions{identities: []Identity{{Identity: bad, Default: true}}})

	resp, body := e.do(t, http.MethodGet, "/api/session/data/default/self", nil, nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("first status = %d; want 502", resp.StatusCode)
	}
	if got := guacError(t, body); !strings.Contains(got.Message, `"broken"`) ||
		!strings.Contains(got.Message, "rejected") {
		t.Errorf("message %q; want it to name the identity and the rejection", got.Message)
	}

	for range 10 {
		resp, body = e.do(t, http.MethodGet, "/api/session/data/default/self", nil, nil)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("repeated status = %d, Retry-After %q; want 503 with Retry-After",
				resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		if got := guacError(t, body); !strings.Contains(got.Message, `"broken"`) {
			t.Errorf("message %q does not name the identity", got.Message)
		}
		if bytes.Contains(body, []byte(bad.Password)) {
			t.Fatal("the password appears in the response")
		}
	}
	if st := e.emu.Stats(); st.FailedLogins != 1 || st.Banned != 0 {
		t.Errorf("failed logins=%d banned=%d; want 1 and 0", st.FailedLogins, st.Banned)
	}
}

func TestUpstreamFailures(t *testing.T) {
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + dead.Addr().String() + "/guacamole"
	dead.Close()

	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-hang }))
	t.Cleanup(func() { close(hang); slow.Close() })

	tests := []struct {
		name       string
		upstream   string
		transport  http.RoundTripper
		wantStatus int
	}{
		{"unreachable", deadURL, nil, http.StatusBadGateway},
		{"too slow", slow.URL + "/guacamole", &http.Transport{ResponseHeaderTimeout: 50 * time.Millisecond},
			http.StatusGatewayTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Logins go to the emulator; only proxied calls fail.
			e := newEnv(t, envOptions{upstream: tt.upstream, transport: tt.transport})
			resp, body := e.do(t, http.MethodGet, "/api/session/data/default/self", nil, nil)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d; want %d (body %s)", resp.StatusCode, tt.wantStatus, body)
			}
			if got := guacError(t, body); got.Type != "INTERNAL_ERROR" || strings.Contains(got.Message, "127.0.0.1") {
				t.Errorf("error = %+v; want INTERNAL_ERROR without internals", got)
			}
		})
	}
}

func TestTunnelErrorsUseHeaders(t *testing.T) {
	e := newEnv(t, envOptions{identities: []Identity{
		{Identity: reporting, APIKeyHashes: [][32]byte{sha256.Sum256([]byte(reportingKey))}},
	}})
	resp, body := e.do(t, http.MethodGet, "/websocket-tunnel?GUAC_ID=1", nil, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status = %d; want 401", resp.StatusCode)
	}
	if got := resp.Header.Get("Guacamole-Status-Code"); got != "769" {
		t.Errorf("Guacamole-Status-Code = %q; want 769", got)
	}
	if resp.Header.Get("Guacamole-Error-Message") == "" || len(body) != 0 {
		t.Errorf("want an error message header and no body; got body %q", body)
	}
}

func TestAdminHandler(t *testing.T) {
	var ready Readiness
	srv := httptest.NewServer(AdminHandler(&ready, nil))
	t.Cleanup(srv.Close)
	get := func(path string) int {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tt := range []struct {
		ready           bool
		healthz, readyz int
	}{{false, 200, 503}, {true, 200, 200}, {false, 200, 503}} {
		ready.Set(tt.ready)
		if h, r := get("/healthz"), get("/readyz"); h != tt.healthz || r != tt.readyz {
			t.Errorf("ready=%t: healthz=%d readyz=%d; want %d and %d", tt.ready, h, r, tt.healthz, tt.readyz)
		}
	}
}

func TestPlainRESTTakesOnlyOrdinaryCalls(t *testing.T) {
	tests := []struct {
		method, path string
		want         bool
	}{
		{"GET", "/api/session/data/default/connections", true},
		{"DELETE", "/api/session/data/default/connections/1", true},
		{"HEAD", "/api/session", true},
		{"DELETE", "/api/session", false},
		{"POST", "/api/tokens", false},
		{"DELETE", "/api/tokens/X", false},
		{"GET", "/api/tokensx", false},
		{"GET", "/websocket-tunnel", false},
		{"POST", "/tunnel", false},
		{"GET", "/api//session/data", false},
		{"GET", "/api/./session", false},
		{"GET", "/api/x/../tokens", false},
		{"GET", "/api/x/..", false},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(tt.method, "http://proxy"+tt.path, nil)
		if got := plainREST(r); got != tt.want {
			t.Errorf("plainREST(%s %s) = %t; want %t", tt.method, tt.path, got, tt.want)
		}
	}
}
