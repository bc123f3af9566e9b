package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/guacproxy/guacproxy/proxy/metrics"
	"github.com/guacproxy/guacproxy/tokencache"
)

// requestIDHeader carries a request's id to Guacamole and back to the
// client, so that the three logs can be joined.
const requestIDHeader = "X-Request-Id"

// callKind tells where a forwarded request wants its token.
type callKind int

const (
	restCall        callKind = iota // Guacamole-Token header
	tunnelWebSocket                 // token query parameter
	tunnelHTTP                      // token in the connect form body
)

// exchange is one request as guacproxy serves it: the response writer that
// counts what is sent, and what the handlers learned. It is also the
// request's context, wrapping the server's, so that one allocation carries
// all of it on the path every request takes.
type exchange struct {
	context.Context
	http.ResponseWriter
	status int
	bytes  int64
	start  time.Time
	reqID  string
	// idHeader backs the X-Request-Id header values of the request and the
	// response, which need no allocation of their own.
	idHeader [1]string

	identity *Identity
	// token is the token to inject; nil for requests that need none (HTTP
	// tunnel reads and writes, refused requests).
	token *tokencache.Token
	kind  callKind
	// tunnelToken is the Guacamole-Tunnel-Token of an HTTP tunnel that
	// Guacamole opened for this request.
	tunnelToken string
}

func (e *exchange) WriteHeader(code int) {
	// Informational answers (103) come before the real status.
	if e.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		e.status = code
	}
	e.ResponseWriter.WriteHeader(code)
}

func (e *exchange) Write(b []byte) (int, error) {
	if e.status == 0 {
		e.status = http.StatusOK
	}
	n, err := e.ResponseWriter.Write(b)
	e.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the server's writer, for
// flushes and hijacks.
func (e *exchange) Unwrap() http.ResponseWriter { return e.ResponseWriter }

type ctxKey struct{}

// Value returns the exchange itself for ctxKey, and otherwise asks the
// context it wraps.
func (e *exchange) Value(key any) any {
	if key == (ctxKey{}) {
		return e
	}
	return e.Context.Value(key)
}

func exchangeFrom(ctx context.Context) *exchange {
	e, _ := ctx.Value(ctxKey{}).(*exchange)
	return e
}

// ServeHTTP serves r: it gives the request an id, routes it, then records
// it in the audit log and the metrics.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ex := &exchange{Context: r.Context(), ResponseWriter: w, start: time.Now()}
	ex.reqID = p.requestID(r.Header.Get(requestIDHeader))
	ex.idHeader[0] = ex.reqID
	r.Header[requestIDHeader] = ex.idHeader[:]
	w.Header()[requestIDHeader] = ex.idHeader[:]
	r = r.WithContext(ex)

	if plainREST(r) {
		p.forward(ex, r)
	} else {
		p.router.ServeHTTP(ex, r)
	}

	d := time.Since(ex.start)
	status := ex.status
	if status == 0 {
		// The handler wrote nothing: the client left before an answer.
		status = 499
	}
	name := metrics.Unidentified
	if ex.identity != nil {
		name = ex.identity.Name
	}
	p.metrics.Request(name, status, d)
	if p.audit == nil {
		return
	}
	fields := []zap.Field{
		zap.String("request_id", ex.reqID), zap.String("identity", name),
		zap.String("method", r.Method), zap.String("path", logPath(r)),
		zap.Int("status", status), zap.Duration("duration", d), zap.Int64("bytes", ex.bytes),
		zap.String("remote_addr", r.RemoteAddr),
	}
	if ex.token != nil {
		fields = append(fields, zap.String("username", ex.token.Username()),
			zap.String("token_fp", ex.token.Fingerprint()))
	}
	if ce := p.audit.Check(zapcore.InfoLevel, "request"); ce != nil {
		ce.Write(fields...)
	}
}

// plainREST reports whether r is an ordinary REST call with a clean path,
// which goes straight to forward. The router would send it there too, but
// matching it against every route and storing the match in the request's
// context costs several allocations on the path every call takes. Anything
// else (logins, logouts, session ends, tunnels, paths to clean) takes the
// router.
func plainREST(r *http.Request) bool {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/api/tokens"), p == "/websocket-tunnel", p == "/tunnel",
		p == "/api/session" && r.Method == http.MethodDelete:
		return false
	}
	return strings.HasPrefix(p, "/") && !strings.Contains(p, "//") &&
		!strings.Contains(p, "/./") && !strings.Contains(p, "/../") &&
		!strings.HasSuffix(p, "/.") && !strings.HasSuffix(p, "/..")
}

// requestID returns the client's request id if it is a sane one, or a new
// one: a random prefix chosen at start and a counter, cheap and unique.
func (p *Proxy) requestID(in string) string {
	if in != "" && len(in) <= 128 && isPrintableToken(in) {
		return in
	}
	n := p.reqSeq.Add(1)
	return p.reqPrefix + strconv.FormatUint(n, 36)
}

func isPrintableToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == ',' || c == ';' {
			return false
		}
	}
	return true
}

func newRequestIDPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]) + "-"
}
