// Package proxy is guacproxy's HTTP side: it recognises which service
// identity is calling, forwards the call to Guacamole through
// httputil.ReverseProxy with the identity's token in place of anything the
// caller sent, and answers errors the way Guacamole's clients expect.
package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/guacproxy/guacproxy/proxy/metrics"
)

// Options configure a Proxy.
type Options struct {
	// Upstream is Guacamole's base URL, including the context path.
	// Required.
	Upstream *url.URL
	// Transport sends requests to Guacamole. If nil,
	// http.DefaultTransport is used.
	Transport http.RoundTripper
	// Tokens hands out the identities' tokens. Required.
	Tokens Tokens
	// Identities are the service identities callers may be recognised as,
	// in order: a request is served as the first one that matches.
	Identities []Identity
	// TrustedProxies are the peers whose identity headers are believed.
	TrustedProxies []netip.Prefix
	// PhantomIdle is how long a token handed out by login emulation lives
	// unused. If zero, 60 minutes, Guacamole's default session timeout.
	PhantomIdle time.Duration
	// Logger receives the proxy's logs. If nil, nothing is logged.
	Logger *zap.Logger
	// AuditLogger, if set, receives one line per request: who, what, the
	// outcome, never a token or query string.
	AuditLogger *zap.Logger
	// Metrics, if set, records request, login and tunnel metrics.
	Metrics *metrics.Metrics
}

// Proxy forwards identified callers' requests to Guacamole.
type Proxy struct {
	ids      atomic.Pointer[identities]
	tokens   Tokens
	rp       *httputil.ReverseProxy
	router   *mux.Router
	tunnels  *tunnels
	phantoms *phantoms
	audit    *zap.Logger
	metrics  *metrics.Metrics

	reqPrefix string
	reqSeq    atomic.Uint64
	log       *zap.Logger
}

// New returns a Proxy. It fails if the identities are ambiguous.
func New(opts Options) (*Proxy, error) {
	if opts.Upstream == nil || opts.Tokens == nil {
		return nil, errors.New("proxy: Upstream and Tokens are required")
	}
	if opts.Transport == nil {
		opts.Transport = http.DefaultTransport
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.PhantomIdle <= 0 {
		opts.PhantomIdle = 60 * time.Minute
	}
	ids, err := newIdentities(opts.Identities, opts.TrustedProxies)
	if err != nil {
		return nil, err
	}

	p := &Proxy{tokens: opts.Tokens, log: opts.Logger.Named("proxy"),
		metrics: opts.Metrics, reqPrefix: newRequestIDPrefix()}
	p.ids.Store(ids)
	if opts.AuditLogger != nil {
		p.audit = opts.AuditLogger.Named("audit")
	}
	p.tunnels = newTunnels(p.metrics)
	p.phantoms = newPhantoms(opts.PhantomIdle)
	upstream := *opts.Upstream
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&upstream)
			pr.SetXForwarded()
			stripClientCredentials(pr.Out.Header, pr.Out.URL)
			p.identities().stripHeaders(pr.Out.Header)
			injectToken(pr.Out, exchangeFrom(pr.In.Context()))
		},
		ModifyResponse: rememberTunnel,
		Transport: &retryTransport{base: timedTransport{opts.Transport, opts.Metrics},
			tokens: opts.Tokens, log: p.log},
		ErrorHandler: p.writeError,
		BufferPool:   bufferPool{},
		ErrorLog:     zap.NewStdLog(p.log.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel))),
	}

	r := mux.NewRouter()
	// Logins and logouts are guacproxy's own business: a client never mints
	// real tokens with its own credentials through guacproxy, nor revokes
	// the token guacproxy injects (DELETE /api/session revokes whatever
	// token comes with it). They are emulated with phantom tokens instead.
	r.Path("/api/tokens").Methods(http.MethodPost).HandlerFunc(p.login)
	r.Path("/api/tokens/{token}").Methods(http.MethodDelete).HandlerFunc(p.logout)
	r.PathPrefix("/api/tokens").Handler(p.refuse(
		"guacproxy logs in to Guacamole itself: only POST /api/tokens and DELETE /api/tokens/{token} are answered."))
	r.Path("/api/session").Methods(http.MethodDelete).HandlerFunc(p.endSession)
	r.Path("/websocket-tunnel").HandlerFunc(p.websocketTunnel)
	r.Path("/tunnel").HandlerFunc(p.httpTunnel)
	r.PathPrefix("/").HandlerFunc(p.forward)
	p.router = r
	return p, nil
}

// forward identifies the caller, gets its identity's token and hands the
// request to the reverse proxy.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request) {
	ex := exchangeFrom(r.Context())
	id, err := p.identify(r, presentedToken(r))
	if err == nil {
		ex.identity = id
		err = p.authorize(id, r)
	}
	if err != nil {
		p.writeError(w, r, err)
		return
	}
	tok, err := p.tokens.Token(r.Context(), id.Identity)
	if err != nil {
		p.writeError(w, r, &loginError{identity: id.Name, err: err})
		return
	}
	ex.token, ex.kind = tok, restCall
	p.rp.ServeHTTP(w, r)
}

// injectToken puts the token of c where Guacamole reads it for c's kind of
// request. Requests without a token (HTTP tunnel reads and writes) get none.
func injectToken(out *http.Request, c *exchange) {
	if c == nil || c.token == nil {
		return
	}
	switch c.kind {
	case restCall:
		out.Header.Set(tokenHeader, c.token.Value())
	case tunnelWebSocket:
		// First, since Guacamole takes the first token parameter.
		q := "token=" + url.QueryEscape(c.token.Value())
		if out.URL.RawQuery != "" {
			q += "&" + out.URL.RawQuery
		}
		out.URL.RawQuery = q
	case tunnelHTTP:
		// The connect handler rewrote the body already.
	}
}

// rememberTunnel notes the Guacamole-Tunnel-Token of an HTTP tunnel that
// Guacamole opened, so that guacproxy can tell when it is in use.
func rememberTunnel(resp *http.Response) error {
	c := exchangeFrom(resp.Request.Context())
	if c != nil && c.kind == tunnelHTTP && resp.StatusCode == http.StatusOK {
		c.tunnelToken = resp.Header.Get(tunnelTokenHeader)
	}
	return nil
}

func (p *Proxy) identities() *identities { return p.ids.Load() }

// copyBuffers are the buffers ReverseProxy copies bodies through: without
// a pool it allocates 32 KiB for every request.
var copyBuffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

type bufferPool struct{}

func (bufferPool) Get() []byte { return copyBuffers.Get().(*[32 << 10]byte)[:] }

func (bufferPool) Put(b []byte) {
	if cap(b) == 32<<10 {
		copyBuffers.Put((*[32 << 10]byte)(b[:32<<10]))
	}
}

// SetIdentities replaces the identities and trusted proxies, as a reload
// does. Requests already identified finish as the identity they had;
// phantom tokens and HTTP tunnels stay with an identity of the same name.
// It fails, changing nothing, if the identities are ambiguous.
func (p *Proxy) SetIdentities(ids []Identity, trusted []netip.Prefix) error {
	r, err := newIdentities(ids, trusted)
	if err != nil {
		return err
	}
	p.ids.Store(r)
	return nil
}

// OpenTunnels returns the number of open tunnels of each identity.
func (p *Proxy) OpenTunnels() map[string]int { return p.tunnels.Open() }

// WaitTunnels blocks until every tunnel has closed or ctx ends. Call it
// after http.Server.Shutdown, which does not wait for WebSocket tunnels.
func (p *Proxy) WaitTunnels(ctx context.Context) error { return p.tunnels.wait(ctx) }

// CloseTunnels closes every open tunnel and releases its token.
func (p *Proxy) CloseTunnels() { p.tunnels.closeAll() }

// Sweep forgets HTTP tunnels that have not been read for a minute,
// releasing their tokens, and phantom tokens past their idle time. The
// owner calls it periodically.
func (p *Proxy) Sweep() {
	now := time.Now()
	p.tunnels.sweep(now)
	p.phantoms.sweep(now)
}

func (p *Proxy) refuse(msg string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.writeError(w, r, &blockedError{msg: msg})
	})
}
