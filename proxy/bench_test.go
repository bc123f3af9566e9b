package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/guacproxy/guacproxy/tokencache"
	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

// benchPath is the REST call every request benchmark makes through a proxy.
const benchPath = "/api/session/data/default/connections"

// benchKey is the API key of benchIdentity.
const benchKey = "bench-api-key-5c1e0d7a"

var benchIdentity = tokencache.Identity{
	Name: "bench", Username: "svc-bench", Password: "bench-pw-secret",
}

func init() {
	secrets.Store(benchKey, true)
	secrets.Store(benchIdentity.Password, true)
}

// benchLogger logs at info level, as guacproxy does by default, into the
// suite's log buffer, so that the no-secrets check in TestMain also covers
// the benchmarks. Debug level would add the per-request log line to the
// measured path.
func benchLogger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(&logs), zapcore.InfoLevel))
}

// connectionsJSON is a Guacamole-style connection list of about 1 KiB, the
// answer of the benchmarked REST call.
var connectionsJSON = guacamoletest.ConnectionList(960)

// deniedJSON is Guacamole's answer to a call with a token it does not know.
var deniedJSON = []byte(`{"message":"Permission Denied.","translatableMessage":` +
	`{"key":"APP.TEXT_UNTRANSLATED","variables":{"MESSAGE":"Permission Denied."}},` +
	`"statusCode":null,"expected":null,"patches":null,"type":"PERMISSION_DENIED"}`)

// restUpstream stands in for Guacamole's REST API on the hot path: it
// answers a call carrying the expected token with connectionsJSON and any
// other call with Guacamole's 403.
type restUpstream struct {
	token string
}

func (u *restUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if r.Header.Get(tokenHeader) != u.token {
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write(deniedJSON)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(connectionsJSON)))
	_, _ = w.Write(connectionsJSON)
}

// handlerTransport is an http.RoundTripper that serves each request by
// calling a handler in the same goroutine, without a network in between.
type handlerTransport struct {
	h http.Handler
}

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := &memResponse{header: make(http.Header)}
	t.h.ServeHTTP(rec, req)
	if req.Body != nil {
		_ = req.Body.Close()
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return &http.Response{
		Status:        strconv.Itoa(rec.status) + " " + http.StatusText(rec.status),
		StatusCode:    rec.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        rec.header,
		Body:          io.NopCloser(bytes.NewReader(rec.body.Bytes())),
		ContentLength: int64(rec.body.Len()),
		Request:       req,
	}, nil
}

// memResponse collects a handler's answer for handlerTransport.
type memResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (m *memResponse) Header() http.Header { return m.header }

func (m *memResponse) WriteHeader(code int) {
	if m.status == 0 {
		m.status = code
	}
}

func (m *memResponse) Write(p []byte) (int, error) {
	m.WriteHeader(http.StatusOK)
	return m.body.Write(p)
}

// sinkWriter is the client side of a benchmarked request: it keeps the
// status and counts the body bytes, and is reset between requests.
type sinkWriter struct {
	header http.Header
	status int
	n      int
}

func newSinkWriter() *sinkWriter { return &sinkWriter{header: make(http.Header)} }

func (w *sinkWriter) Header() http.Header { return w.header }

func (w *sinkWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *sinkWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += len(p)
	return len(p), nil
}

func (w *sinkWriter) reset() {
	clear(w.header)
	w.status, w.n = 0, 0
}

// served reports whether the last request got the full 200 answer.
func (w *sinkWriter) served() bool {
	return w.status == http.StatusOK && w.n == len(connectionsJSON)
}

// hitEnv is guacproxy and a bare reverse proxy in front of the same upstream,
// with guacproxy's token cache already holding benchIdentity's token.
type hitEnv struct {
	guacproxy http.Handler
	bare      http.Handler
}

// newHitEnv logs benchIdentity in to an in-memory emulator and builds both
// proxies. If loopback is set, the upstream is an httptest server and both
// proxies reach it over TCP; otherwise they call it in memory. Both use a
// copy of http.DefaultTransport.
func newHitEnv(b *testing.B, loopback bool) *hitEnv {
	b.Helper()
	emu := guacamoletest.New(guacamoletest.Options{
		Users: map[string]guacamoletest.User{
			benchIdentity.Username: {Password: benchIdentity.Password},
		},
	})
	cache := tokencache.New(tokencache.Options{
		Client:        tokencache.NewClient("http://guacamole.test/guacamole", &http.Client{Transport: handlerTransport{emu}}),
		SweepInterval: -1,
		Logger:        benchLogger(),
	})
	b.Cleanup(func() { _, _ = cache.Close(context.Background()) })
	tok, err := cache.Token(context.Background(), benchIdentity)
	if err != nil {
		b.Fatal(err)
	}
	secrets.Store(tok.Value(), true)

	up := &restUpstream{token: tok.Value()}
	var transport http.RoundTripper = handlerTransport{up}
	base := "http://guacamole.test/guacamole"
	if loopback {
		srv := httptest.NewServer(up)
		b.Cleanup(srv.Close)
		tr := http.DefaultTransport.(*http.Transport).Clone()
		b.Cleanup(tr.CloseIdleConnections)
		transport, base = tr, srv.URL+"/guacamole"
	}
	upstream, _ := url.Parse(base)

	p, err := New(Options{
		Upstream:  upstream,
		Transport: transport,
		Tokens:    cache,
		Identities: []Identity{{
			Identity:     benchIdentity,
			APIKeyHashes: [][32]byte{sha256.Sum256([]byte(benchKey))},
		}},
		Logger: benchLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	return &hitEnv{guacproxy: p, bare: bareProxy(upstream, transport, tok.Value())}
}

func (e *hitEnv) handler(target string) http.Handler {
	if target == "guacproxy" {
		return e.guacproxy
	}
	return e.bare
}

// bareProxy is the baseline: an httputil.ReverseProxy with default settings
// that does the same forwarding as guacproxy (target URL, X-Forwarded-*
// headers) and sets a static token header, and nothing else.
func bareProxy(upstream *url.URL, transport http.RoundTripper, token string) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.SetXForwarded()
			pr.Out.Header.Set(tokenHeader, token)
		},
		Transport: transport,
	}
}

// benchHeaders are the headers of newBenchRequest.
var benchHeaders = map[string]bool{"Authorization": true, "Accept": true, "User-Agent": true}

func newBenchRequest() *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://guacproxy.test"+benchPath, nil)
	r.Header.Set("Authorization", "Bearer "+benchKey)
	r.Header.Set("Accept", "application/json")
	r.Header.Set("User-Agent", "guacbench/1")
	return r
}

// BenchmarkCacheHit measures a request whose token is cached, through
// guacproxy's handler and through a bare httputil.ReverseProxy, over the
// same upstream, first in memory and then over loopback TCP.
//
// The bare and guacproxy sub-benchmarks measure each proxy on its own. The
// ratio sub-benchmark alternates the two request by request, so that both
// see the same machine, and reports guacproxy's time over the bare proxy's
// (x-bare) and the difference in allocations per request (+allocs/op); its
// ns/op is the time of one pair.
func BenchmarkCacheHit(b *testing.B) {
	for _, upstream := range []string{"inmemory", "loopback"} {
		b.Run(upstream, func(b *testing.B) {
			env := newHitEnv(b, upstream == "loopback")
			for _, target := range []string{"bare", "guacproxy"} {
				b.Run(target, func(b *testing.B) {
					h := env.handler(target)
					req, w := newBenchRequest(), newSinkWriter()
					for b.Loop() {
						serveOne(b, h, req, w)
					}
				})
			}
			b.Run("ratio", func(b *testing.B) {
				extra := env.extraAllocs(b)
				req, w := newBenchRequest(), newSinkWriter()
				var tg, tb time.Duration
				for b.Loop() {
					t0 := time.Now()
					serveOne(b, env.guacproxy, req, w)
					t1 := time.Now()
					serveOne(b, env.bare, req, w)
					tg, tb = tg+t1.Sub(t0), tb+time.Since(t1)
				}
				b.ReportMetric(float64(tg)/float64(tb), "x-bare")
				b.ReportMetric(extra, "+allocs/op")
			})
		})
	}
}

// BenchmarkCacheHitParallel is BenchmarkCacheHit's in-memory case with
// concurrent requests on all of GOMAXPROCS, where shared state (the token
// cache's lock, the touch of the token) would show as contention.
func BenchmarkCacheHitParallel(b *testing.B) {
	env := newHitEnv(b, false)
	for _, target := range []string{"bare", "guacproxy"} {
		b.Run(target, func(b *testing.B) {
			h := env.handler(target)
			b.RunParallel(func(pb *testing.PB) {
				req, w := newBenchRequest(), newSinkWriter()
				for pb.Next() {
					serveOne(b, h, req, w)
				}
			})
		})
	}
	b.Run("ratio", func(b *testing.B) {
		var tg, tb atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			req, w := newBenchRequest(), newSinkWriter()
			var g, bare time.Duration
			for pb.Next() {
				t0 := time.Now()
				serveOne(b, env.guacproxy, req, w)
				t1 := time.Now()
				serveOne(b, env.bare, req, w)
				g, bare = g+t1.Sub(t0), bare+time.Since(t1)
			}
			tg.Add(int64(g))
			tb.Add(int64(bare))
		})
		b.ReportMetric(float64(tg.Load())/float64(tb.Load()), "x-bare")
	})
}

// serveOne sends req through h and fails the benchmark unless the full
// answer came back. Headers the handler added to req are removed again, so
// that every request looks like a client's first.
func serveOne(b *testing.B, h http.Handler, req *http.Request, w *sinkWriter) {
	w.reset()
	n := len(req.Header)
	h.ServeHTTP(w, req)
	if len(req.Header) != n {
		for k := range req.Header {
			if !benchHeaders[k] {
				delete(req.Header, k)
			}
		}
	}
	if !w.served() {
		b.Fatalf("got status %d with %d bytes; want 200 with %d",
			w.status, w.n, len(connectionsJSON))
	}
}

// extraAllocs returns how many more allocations a request through guacproxy
// makes than one through the bare proxy.
func (e *hitEnv) extraAllocs(b *testing.B) float64 {
	req, w := newBenchRequest(), newSinkWriter()
	count := func(h http.Handler) float64 {
		return testing.AllocsPerRun(200, func() { serveOne(b, h, req, w) })
	}
	return count(e.guacproxy) - count(e.bare)
}

// BenchmarkResolveIdentity measures recognising the caller among ten
// identities, as the forwarding handler does before it asks for a token: by
// API key, as the default without a key, and as the default after an
// unknown key.
func BenchmarkResolveIdentity(b *testing.B) {
	var list []Identity
	for i := range 10 {
		list = append(list, Identity{
			Identity:     tokencache.Identity{Name: fmt.Sprintf("id-%d", i)},
			APIKeyHashes: [][32]byte{sha256.Sum256([]byte(fmt.Sprintf("key-%d", i)))},
			Default:      i == 0,
		})
	}
	// The cache is never asked for a token here.
	cache := tokencache.New(tokencache.Options{
		Client:        tokencache.NewClient("http://guacamole.test", nil),
		SweepInterval: -1,
	})
	b.Cleanup(func() { _, _ = cache.Close(context.Background()) })
	upstream, _ := url.Parse("http://guacamole.test/guacamole")
	p, err := New(Options{Upstream: upstream, Tokens: cache, Identities: list})
	if err != nil {
		b.Fatal(err)
	}

	tests := []struct {
		name, auth, want string
	}{
		{"api-key", "Bearer key-7", "id-7"},
		{"default", "", "id-0"},
		{"unknown-key", "Bearer not-a-key", "id-0"},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			req := newBenchRequest()
			req.Header.Del("Authorization")
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			var (
				id  *Identity
				err error
			)
			for b.Loop() {
				id, err = p.identify(req, presentedToken(req))
			}
			if err != nil || id == nil || id.Name != tt.want {
				b.Fatalf("resolved %v, %v; want %s", id, err, tt.want)
			}
		})
	}
}

// stripQueries are query strings of 50 parameters each, shaped like the
// parameters of Guacamole's tunnel requests.
var stripQueries = func() map[string]string {
	plain := make([]string, 0, 50)
	encoded := make([]string, 0, 50)
	for i := range 50 {
		plain = append(plain, fmt.Sprintf("GUAC_ARG%02d=value%02d", i, i))
		encoded = append(encoded, fmt.Sprintf("GUAC_ARG%02d=image%%2Fpng%%3Bq%%3D%d", i, i))
	}
	tokens := append([]string(nil), encoded...)
	tokens[0] = "token=0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789AB"
	tokens[25] = "TOKEN=0123456789ABCDEF"
	tokens[49] = "%74oken=0123456789ABCDEF"
	return map[string]string{
		// No k, K or % anywhere: the pre-check lets it through untouched.
		"plain": strings.Join(plain, "&"),
		// Escapes defeat the pre-check, so the query is rebuilt.
		"encoded": strings.Join(encoded, "&"),
		// Three token parameters in different spellings are dropped.
		"tokens": strings.Join(tokens, "&"),
	}
}()

// BenchmarkStripClientCredentials measures removing a client's credentials
// from a request with ten headers (three of them credentials) and a query of
// 50 parameters, with and without token parameters.
func BenchmarkStripClientCredentials(b *testing.B) {
	for _, name := range []string{"plain", "encoded", "tokens"} {
		b.Run(name, func(b *testing.B) {
			query := stripQueries[name]
			want := 50
			if name == "tokens" {
				want = 47
			}
			u := &url.URL{Scheme: "http", Host: "guacamole.test", Path: benchPath, RawQuery: query}
			h := http.Header{
				"Accept":          {"application/json"},
				"Accept-Encoding": {"gzip"},
				"User-Agent":      {"guacbench/1"},
				"X-Request-Id":    {"0f9a1c"},
				"Content-Type":    {"application/json"},
				"Cookie":          {"a=b"},
				"Connection":      {"keep-alive"},
			}
			auth, tok := []string{"Bearer " + benchKey}, []string{"client-token"}
			b.SetBytes(int64(len(query)))
			for b.Loop() {
				u.RawQuery = query
				h["Authorization"], h[tokenHeader], h["guacamole-token"] = auth, tok, tok
				stripClientCredentials(h, u)
			}
			if got := strings.Count(u.RawQuery, "&") + 1; got != want || len(h) != 7 {
				b.Fatalf("left %d parameters and %d headers; want %d and 7", got, len(h), want)
			}
		})
	}
}
