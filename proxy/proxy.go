// Package proxy is guacproxy's HTTP side: it recognises which service
// identity is calling, forwards the call to Guacamole through
// httputil.ReverseProxy with the identity's token in place of anything the
// caller sent, and answers errors the way Guacamole's clients expect.
package proxy

import (
	"errors"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/gorilla/mux"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
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
	// Identities are the service identities callers may be recognised as.
	Identities []Identity
	// Logger receives the proxy's logs. If nil, nothing is logged.
	Logger *zap.Logger
}

// Proxy forwards identified callers' requests to Guacamole.
type Proxy struct {
	ids    *identities
	tokens Tokens
	rp     *httputil.ReverseProxy
	router *mux.Router
	log    *zap.Logger
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
	ids, err := newIdentities(opts.Identities)
	if err != nil {
		return nil, err
	}

	p := &Proxy{ids: ids, tokens: opts.Tokens, log: opts.Logger.Named("proxy")}
	upstream := *opts.Upstream
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&upstream)
			pr.SetXForwarded()
			stripClientCredentials(pr.Out.Header, pr.Out.URL)
			if c := callFrom(pr.In.Context()); c != nil {
				pr.Out.Header.Set(tokenHeader, c.token.Value())
			}
		},
		Transport:    &retryTransport{base: opts.Transport, tokens: opts.Tokens, log: p.log},
		ErrorHandler: p.writeError,
		ErrorLog:     zap.NewStdLog(p.log.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel))),
	}

	r := mux.NewRouter()
	// Logins and logouts are guacproxy's own business: a client must not
	// mint real tokens with its own credentials through guacproxy, nor
	// revoke the token guacproxy injects (DELETE /api/session revokes
	// whatever token comes with it).
	r.PathPrefix("/api/tokens").Handler(p.refuse(
		"guacproxy logs in to Guacamole itself: call the API without logging in or out."))
	r.Path("/api/session").Methods(http.MethodDelete).Handler(p.refuse(
		"guacproxy manages the Guacamole session: it cannot be ended by a client."))
	r.PathPrefix("/").Handler(http.HandlerFunc(p.forward))
	p.router = r
	return p, nil
}

// ServeHTTP routes r.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.router.ServeHTTP(w, r)
}

// forward identifies the caller, gets its identity's token and hands the
// request to the reverse proxy.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := p.ids.resolve(r)
	if id == nil {
		p.writeError(w, r, errUnidentified)
		return
	}
	tok, err := p.tokens.Token(r.Context(), id.Identity)
	if err != nil {
		p.writeError(w, r, &loginError{identity: id.Name, err: err})
		return
	}

	c := &call{identity: id, token: tok}
	if ce := p.log.Check(zapcore.DebugLevel, "request"); ce != nil {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		p.rp.ServeHTTP(sw, r.WithContext(withCall(r.Context(), c)))
		ce.Write(zap.String("identity", id.Name), zap.String("method", r.Method),
			zap.String("path", r.URL.Path), zap.Int("status", sw.status),
			zap.String("token_fp", c.token.Fingerprint()), zap.Duration("duration", time.Since(start)))
		return
	}
	p.rp.ServeHTTP(w, r.WithContext(withCall(r.Context(), c)))
}

func (p *Proxy) refuse(msg string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.writeError(w, r, &blockedError{msg: msg})
	})
}

// statusWriter remembers the status written, for the debug log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer (flushes
// and hijacks).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
