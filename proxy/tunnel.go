package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/guacproxy/guacproxy/proxy/metrics"
)

const (
	// maxConnectBody bounds the form of an HTTP tunnel's connect request:
	// a token and a handful of connection parameters.
	maxConnectBody = 64 << 10
	// httpTunnelIdle is how long an HTTP tunnel may go without a read
	// before guacproxy considers it closed. Guacamole's JavaScript client
	// keeps a read open at all times while a tunnel is up.
	httpTunnelIdle = time.Minute
	// tunnelTokenHeader carries the capability of an HTTP tunnel after its
	// connect request: reads and writes need nothing else.
	tunnelTokenHeader = "Guacamole-Tunnel-Token"
)

var (
	errConnectTooLarge = errors.New("tunnel connect request too large")
	errOtherTunnel     = errors.New("tunnel of another identity")
)

// tunnels tracks the open tunnels: WebSocket tunnels, whose connections
// http.Server.Shutdown does not wait for once hijacked, and HTTP tunnels,
// which live across many requests.
type tunnels struct {
	metrics *metrics.Metrics

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	http   map[string]*httpTunnel // by Guacamole-Tunnel-Token
	counts map[string]int         // open tunnels by identity
	idle   chan struct{}          // closed and replaced when the count drops to 0
	open   int
}

type httpTunnel struct {
	identity string
	release  func()
	reading  int
	lastRead time.Time
}

func newTunnels(m *metrics.Metrics) *tunnels {
	return &tunnels{
		metrics: m,
		conns:   make(map[net.Conn]struct{}),
		http:    make(map[string]*httpTunnel),
		counts:  make(map[string]int),
		idle:    make(chan struct{}),
	}
}

func (ts *tunnels) add(identity string) {
	ts.metrics.TunnelOpened(identity)
	ts.mu.Lock()
	ts.counts[identity]++
	ts.open++
	ts.mu.Unlock()
}

func (ts *tunnels) done(identity string) {
	ts.metrics.TunnelClosed(identity)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.counts[identity]--
	if ts.counts[identity] == 0 {
		delete(ts.counts, identity)
	}
	ts.open--
	if ts.open == 0 {
		close(ts.idle)
		ts.idle = make(chan struct{})
	}
}

// Open returns the number of open tunnels of each identity.
func (ts *tunnels) Open() map[string]int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	m := make(map[string]int, len(ts.counts))
	for k, v := range ts.counts {
		m[k] = v
	}
	return m
}

// wait blocks until no tunnel is open or ctx ends.
func (ts *tunnels) wait(ctx context.Context) error {
	for {
		ts.mu.Lock()
		open, idle := ts.open, ts.idle
		ts.mu.Unlock()
		if open == 0 {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// closeAll closes every WebSocket connection and forgets every HTTP tunnel,
// releasing their tokens.
func (ts *tunnels) closeAll() {
	ts.mu.Lock()
	conns := make([]net.Conn, 0, len(ts.conns))
	for c := range ts.conns {
		conns = append(conns, c)
	}
	hts := ts.http
	ts.http = make(map[string]*httpTunnel)
	ts.mu.Unlock()

	for _, c := range conns {
		_ = c.Close()
	}
	for _, ht := range hts {
		ht.release()
		ts.done(ht.identity)
	}
}

// sweep forgets HTTP tunnels that have not been read for httpTunnelIdle.
func (ts *tunnels) sweep(now time.Time) {
	ts.mu.Lock()
	var gone []*httpTunnel
	for k, ht := range ts.http {
		if ht.reading == 0 && now.Sub(ht.lastRead) >= httpTunnelIdle {
			delete(ts.http, k)
			gone = append(gone, ht)
		}
	}
	ts.mu.Unlock()
	for _, ht := range gone {
		ht.release()
		ts.done(ht.identity)
	}
}

// trackHTTP registers an HTTP tunnel that Guacamole opened; release is
// called when it is considered closed.
func (ts *tunnels) trackHTTP(tunnelToken, identity string, release func()) {
	ts.mu.Lock()
	ts.http[tunnelToken] = &httpTunnel{identity: identity, release: release, lastRead: time.Now()}
	ts.mu.Unlock()
}

// owner returns the name of the identity that opened the HTTP tunnel, or
// "".
func (ts *tunnels) owner(tunnelToken string) string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ht := ts.http[tunnelToken]; ht != nil {
		return ht.identity
	}
	return ""
}

// reading marks a read of an HTTP tunnel as started; the returned function
// marks it finished.
func (ts *tunnels) reading(tunnelToken string) func() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ht := ts.http[tunnelToken]
	if ht == nil {
		return func() {}
	}
	ht.reading++
	return func() {
		ts.mu.Lock()
		ht.reading--
		ht.lastRead = time.Now()
		ts.mu.Unlock()
	}
}

// hijackTracker records the connection ReverseProxy hijacks for a
// WebSocket, so that shutdown can close it.
type hijackTracker struct {
	http.ResponseWriter
	ts   *tunnels
	conn net.Conn
}

func (w *hijackTracker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.ts.mu.Lock()
	w.ts.conns[c] = struct{}{}
	w.ts.mu.Unlock()
	w.conn = c
	// The switch of protocols is written on the hijacked connection, so
	// the exchange never sees its status.
	if ex, ok := w.ResponseWriter.(*exchange); ok && ex.status == 0 {
		ex.status = http.StatusSwitchingProtocols
	}
	return c, rw, nil
}

func (w *hijackTracker) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *hijackTracker) forget() {
	if w.conn == nil {
		return
	}
	w.ts.mu.Lock()
	delete(w.ts.conns, w.conn)
	w.ts.mu.Unlock()
}

// websocketTunnel opens a WebSocket tunnel with the caller's token in its
// token parameter, the only place Guacamole's tunnels read it from.
func (p *Proxy) websocketTunnel(w http.ResponseWriter, r *http.Request) {
	c := exchangeFrom(r.Context())
	release, err := p.tunnelCall(r, c, tunnelWebSocket, r.URL.Query().Get("token"))
	if err != nil {
		p.writeError(w, r, err)
		return
	}
	defer release()

	p.tunnels.add(c.identity.Name)
	defer p.tunnels.done(c.identity.Name)
	tw := &hijackTracker{ResponseWriter: w, ts: p.tunnels}
	defer tw.forget()
	p.log.Info("tunnel opened", zap.String("identity", c.identity.Name),
		zap.String("kind", "websocket"), zap.String("token_fp", c.token.Fingerprint()))
	p.rp.ServeHTTP(tw, r)
	p.log.Info("tunnel closed", zap.String("identity", c.identity.Name),
		zap.String("kind", "websocket"), zap.String("token_fp", c.token.Fingerprint()))
}

// httpTunnel serves Guacamole's HTTP tunnel. Only its connect request
// carries a token, in the form body; reads and writes carry the tunnel's
// own Guacamole-Tunnel-Token and pass through untouched.
func (p *Proxy) httpTunnel(w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery != "connect" || r.Method != http.MethodPost {
		p.httpTunnelUse(w, r)
		return
	}

	body, err := io.ReadAll(io.LimitReader(r.Body, maxConnectBody+1))
	if err == nil && len(body) > maxConnectBody {
		err = errConnectTooLarge
	}
	if err != nil {
		p.writeError(w, r, err)
		return
	}
	posted, _ := url.ParseQuery(string(body))
	c := exchangeFrom(r.Context())
	release, err := p.tunnelCall(r, c, tunnelHTTP, posted.Get("token"))
	if err != nil {
		p.writeError(w, r, err)
		return
	}
	form := "token=" + url.QueryEscape(c.token.Value())
	if rest := stripTokenParam(string(body)); rest != "" {
		form += "&" + rest
	}
	r2 := r.Clone(r.Context())
	r2.Body = io.NopCloser(strings.NewReader(form))
	r2.ContentLength = int64(len(form))
	r2.Header.Set("Content-Length", strconv.Itoa(len(form)))

	p.rp.ServeHTTP(w, r2)
	if c.tunnelToken == "" {
		release()
		return
	}
	p.tunnels.add(c.identity.Name)
	p.tunnels.trackHTTP(c.tunnelToken, c.identity.Name, release)
	p.log.Info("tunnel opened", zap.String("identity", c.identity.Name),
		zap.String("kind", "http"), zap.String("token_fp", c.token.Fingerprint()))
}

// httpTunnelUse forwards a read or write of an HTTP tunnel. A tunnel that
// guacproxy opened belongs to the identity that opened it; a caller proven
// to be another identity may not use it. Otherwise the caller is identified
// as for any request. Either way the identity's allow list applies.
func (p *Proxy) httpTunnelUse(w http.ResponseWriter, r *http.Request) {
	tt := r.Header.Get(tunnelTokenHeader)
	ids := p.identities()
	owner := p.tunnels.owner(tt)
	id := ids.byName[owner]
	var err error
	switch explicit := ids.explicit(r); {
	case owner != "" && id == nil:
		err = errOtherTunnel // its identity was removed
	case id == nil:
		id, err = p.identify(r, "")
	case explicit != nil && explicit != id:
		err = errOtherTunnel
	}
	if err == nil {
		exchangeFrom(r.Context()).identity = id
		err = p.authorize(id, r)
	}
	if err != nil {
		p.writeError(w, r, err)
		return
	}
	if strings.HasPrefix(r.URL.RawQuery, "read:") {
		defer p.tunnels.reading(tt)()
	}
	p.rp.ServeHTTP(w, r)
}

// tunnelCall identifies the caller and leases a token for a tunnel, filling
// in ex. A tunnel cannot be replayed once open, so the token is checked
// first: a token that died with a Guacamole restart is replaced before it
// is used.
func (p *Proxy) tunnelCall(r *http.Request, ex *exchange, kind callKind, presented string) (func(), error) {
	id, err := p.identify(r, presented)
	if err == nil {
		ex.identity = id
		err = p.authorize(id, r)
	}
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		tok, release, err := p.tokens.Lease(r.Context(), id.Identity)
		if err != nil {
			return nil, &loginError{identity: id.Name, err: err}
		}
		// A failed check is not a dead token: let Guacamole judge.
		if dead, err := p.tokens.Dead(r.Context(), tok); err != nil || !dead || attempt > 0 {
			ex.token, ex.kind = tok, kind
			return release, nil //nolint:nilerr // see above
		}
		release()
	}
}
